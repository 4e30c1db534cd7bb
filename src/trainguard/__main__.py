"""`python -m trainguard`: the same CLI as the `trainguard` script, for environments without it on PATH."""

from trainguard.cli import main

if __name__ == "__main__":
    main()
