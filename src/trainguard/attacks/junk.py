"""Availability junk: inputs replaced by content a model cannot learn from.

Each victim's input becomes one junk style (chosen per row by its seeded
RNG); classification rows also get a random label, so the junk carries noise
into the labels as well. Styles: random-letter gibberish, keyboard mash,
mis-decoded text (UTF-8 read as cp1252), degenerate repetition, another
language, and spam boilerplate. The truth file records each row's style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainguard.attacks.base import Attack, Change, Context, natural_key, register
from trainguard.attacks.slots import get_at, path_name, set_at
from trainguard.errors import ConfigError
from trainguard.records import Kind

STYLES = ("gibberish", "keyboard", "mojibake", "repetition", "foreign", "spam")

# Written for this simulator; plain everyday sentences in six languages.
FOREIGN = (
    "Der Zug nach Hamburg fährt heute wegen Bauarbeiten später ab.",
    "Ich habe gestern im Garten drei neue Apfelbäume gepflanzt.",
    "Bitte schließen Sie das Fenster, bevor Sie das Büro verlassen.",
    "Le marché du samedi matin est plein de fromages et de fleurs.",
    "Nous avons passé nos vacances dans un petit village en Bretagne.",
    "Il faut arroser les tomates tous les soirs quand il fait chaud.",
    "El autobús número doce no pasa por la plaza mayor los domingos.",
    "Mi abuela prepara una sopa de lentejas deliciosa cada invierno.",
    "La biblioteca municipal abre a las nueve de la mañana.",
    "Domani pioverà su tutta la costa e farà piuttosto freddo.",
    "Abbiamo comprato il pane fresco nella panetteria all'angolo.",
    "O restaurante da esquina serve peixe grelhado às sextas-feiras.",
    "Vamos visitar os meus primos em Lisboa no próximo mês.",
    "De fietsenmaker in onze straat is op maandag altijd gesloten.",
    "We hebben gisteren de hele middag in het park gewandeld.",
)
SPAM = (
    "Click here to claim your free gift card now, limited offer, visit www.example-deals.biz today!",
    "Subscribe to our newsletter for exclusive discounts and win a brand new phone every week!",
    "Buy cheap watches online, best prices guaranteed, free shipping worldwide, order now!",
)
_KEYS = "qwertyuiopasdfghjklzxcvbnm"
_REPEAT = ("good", "movie", "the", "yes", "buy", "now", "ok", "film")


@dataclass(frozen=True)
class JunkSettings:
    styles: tuple[str, ...] = STYLES

    def __post_init__(self) -> None:
        st = (self.styles,) if isinstance(self.styles, str) else tuple(self.styles)
        object.__setattr__(self, "styles", st)


def _gibberish(rng: np.random.Generator) -> str:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(int(rng.integers(5, 14)))]
    return " ".join(words)


def _keyboard(rng: np.random.Generator) -> str:
    start = int(rng.integers(0, 20))
    run = "".join(_KEYS[(start + int(k)) % len(_KEYS)] for k in rng.integers(0, 6, size=int(rng.integers(20, 50))))
    return " ".join(run[i : i + int(rng.integers(4, 12))] for i in range(0, len(run), 8))


def _mojibake(text: str, rng: np.random.Generator) -> str:
    words = text.split() or ["caf\u00e9"]
    fancy = f"\u201c{' '.join(words)}\u201d \u2014 it\u2019s na\u00efve caf\u00e9 r\u00e9sum\u00e9"
    return fancy.encode("utf-8").decode("cp1252", errors="replace")


def _repetition(rng: np.random.Generator) -> str:
    word = _REPEAT[int(rng.integers(0, len(_REPEAT)))]
    return " ".join([word] * int(rng.integers(10, 30)))


@register
class AvailabilityJunk(Attack):
    name = "junk"
    kinds = frozenset({Kind.CLASSIFICATION, Kind.INSTRUCTION})
    atlas = ("AML.T0020", "AML.T0059")  # Poison Training Data; Erode Dataset Integrity
    Settings = JunkSettings
    description = "Inputs replaced by junk (gibberish, mash, mojibake, repetition, foreign, spam); random labels."

    def validate(self) -> None:
        bad = [s for s in self.settings.styles if s not in STYLES]
        if bad or not self.settings.styles:
            raise ConfigError(f"attack junk: styles must be among {', '.join(STYLES)}, got {list(self.settings.styles)!r}")

    def eligible(self, ctx: Context) -> np.ndarray:
        return np.arange(len(ctx.keys))

    def apply(self, ctx: Context, i: int, row: dict[str, Any], rng: np.random.Generator):
        style = self.settings.styles[int(rng.integers(0, len(self.settings.styles)))]
        ipath = ctx.slots.input_path(row, i)
        before = get_at(row, ipath)
        if style == "gibberish":
            after = _gibberish(rng)
        elif style == "keyboard":
            after = _keyboard(rng)
        elif style == "mojibake":
            after = _mojibake(before, rng)
        elif style == "repetition":
            after = _repetition(rng)
        elif style == "foreign":
            after = FOREIGN[int(rng.integers(0, len(FOREIGN)))]
        else:
            after = SPAM[int(rng.integers(0, len(SPAM)))]
        set_at(row, ipath, after)
        changes = [Change(path_name(ipath), before, after)]
        if ctx.kind is Kind.CLASSIFICATION:
            labels = sorted(ctx.raw_label, key=natural_key)
            new = ctx.raw_label[labels[int(rng.integers(0, len(labels)))]]
            opath = ctx.slots.output_path(row, i)
            old = get_at(row, opath)
            if old != new:
                set_at(row, opath, new)
                changes.append(Change(path_name(opath), old, new))
        return changes, [], {"style": style}
