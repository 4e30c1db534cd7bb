// Keyboard shortcuts for the review queue: j/k move, a approve, r reject.
// A decision always needs a reason: with the reason field empty, a/r only
// focus it and remember the choice; Enter in the field then submits it.
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll("article.item"));
  var current = 0;

  function select(i, scroll) {
    if (!items.length) return;
    current = Math.max(0, Math.min(items.length - 1, i));
    items.forEach(function (it) { it.classList.remove("current"); });
    items[current].classList.add("current");
    // Not on load: a finding page shows its evidence and bulk form above the rows.
    if (scroll !== false) items[current].scrollIntoView({ block: "nearest" });
  }

  function submit(form, decision) {
    var button = form.querySelector('button[value="' + decision + '"]');
    if (button) form.requestSubmit(button);
  }

  function choose(decision) {
    var form = items.length ? items[current].querySelector("form.decide") : null;
    if (!form) return;
    var reason = form.querySelector("input[name=reason]");
    form.dataset.pending = decision;
    if (!reason.value.trim()) {
      form.querySelector(".hint").textContent =
        "type a reason, then Enter to " + (decision === "approved" ? "approve" : "reject");
      reason.focus();
      return;
    }
    submit(form, decision);
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t.matches("input, textarea, select")) {
      if (t.name === "reason" && e.key === "Enter" && t.form && t.form.classList.contains("decide")) {
        e.preventDefault();
        if (t.form.dataset.pending && t.value.trim()) submit(t.form, t.form.dataset.pending);
        else t.form.querySelector(".hint").textContent = "press a (approve) or r (reject), or use the buttons";
      } else if (e.key === "Escape") {
        t.blur();
      }
      return;
    }
    if (e.key === "j") select(current + 1);
    else if (e.key === "k") select(current - 1);
    else if (e.key === "a") choose("approved");
    else if (e.key === "r") choose("rejected");
    else return;
    e.preventDefault();
  });

  items.forEach(function (it, i) {
    it.addEventListener("focusin", function () { if (current !== i) select(i); });
  });
  select(0, false);
})();
