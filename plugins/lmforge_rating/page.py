"""The rating page: HTML, CSS and script, served by :mod:`lmforge_rating.server`.

Accessibility: one ``main`` landmark with headings; the two responses are labelled regions;
the choices are a labelled group of real buttons with ``aria-pressed`` and
``aria-keyshortcuts``; the note has a visible label; status messages go to a polite live
region; after each item focus moves to the item's heading so a screen reader reads it. Text
is dark on light (contrast above 12:1) and the focus ring is a 3 px outline. Keyboard: 1 / A
(left is better), 2 / B (right), 3 / T (tie), 0 / S (skip) choose; N goes to the note; Enter
submits (Shift+Enter: a new line in the note). Responses are inserted as text, never HTML.
"""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lmforge rate</title>
<link rel="stylesheet" href="/rate.css">
<script src="/rate.js" defer></script>
</head>
<body>
<main>
  <h1>Which response is better?</h1>
  <form id="login" hidden>
    <label for="rater-input">Your rater id</label>
    <input id="rater-input" name="rater" autocomplete="username" required
           pattern="[A-Za-z0-9._@-]{1,64}" aria-describedby="rater-help">
    <p id="rater-help" class="help">Letters, digits, '.', '_', '-' or '@'. Your answers are
      recorded under this id; come back with the same id to continue where you stopped.</p>
    <button type="submit">Start rating</button>
  </form>
  <div id="rating" hidden>
    <p class="who">Rating as <strong id="rater-name"></strong> ·
      <span id="progress"></span> · <a href="/">change rater</a></p>
    <h2 id="item-heading" tabindex="-1">Prompt</h2>
    <div id="prompt" class="prompt"></div>
    <div class="responses">
      <section aria-labelledby="left-title" class="response">
        <h3 id="left-title">Response A</h3>
        <div id="left" class="text"></div>
      </section>
      <section aria-labelledby="right-title" class="response">
        <h3 id="right-title">Response B</h3>
        <div id="right" class="text"></div>
      </section>
    </div>
    <form id="vote">
      <div role="group" aria-labelledby="choice-label" class="choices">
        <span id="choice-label" class="label">Your choice</span>
        <button type="button" class="choice" data-side="left" aria-pressed="false"
                aria-keyshortcuts="1 A">A is better <kbd>1</kbd></button>
        <button type="button" class="choice" data-side="right" aria-pressed="false"
                aria-keyshortcuts="2 B">B is better <kbd>2</kbd></button>
        <button type="button" class="choice" data-side="tie" aria-pressed="false"
                aria-keyshortcuts="3 T">Tie <kbd>3</kbd></button>
        <button type="button" class="choice" data-side="skip" aria-pressed="false"
                aria-keyshortcuts="0 S">Skip <kbd>0</kbd></button>
      </div>
      <label for="note">Note (optional) <span class="help">— press N to write one</span></label>
      <textarea id="note" rows="2" maxlength="2000" aria-keyshortcuts="N"
                aria-describedby="note-help"></textarea>
      <p id="note-help" class="help">Enter submits; Shift+Enter starts a new line.</p>
      <button type="submit" id="submit">Submit <kbd>Enter</kbd></button>
    </form>
  </div>
  <div id="finished" hidden>
    <h2 id="finished-heading" tabindex="-1">All done — thank you</h2>
    <p id="finished-text"></p>
  </div>
  <p id="status" role="status" aria-live="polite"></p>
</main>
</body>
</html>
"""

CSS = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1a1a1a; background: #fff; margin: 0; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0; }
h2 { font-size: 1.2rem; margin: 1rem 0 .25rem; }
h3 { font-size: 1.05rem; margin: 0 0 .5rem; }
.help { color: #404040; font-size: .9rem; margin: .25rem 0; }
.who { color: #333; }
a { color: #0645ad; }
.prompt, .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.prompt { background: #f3f3f3; border-left: 4px solid #555; padding: .5rem .75rem; }
.prompt .role { font-weight: 600; }
.responses { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin: 1rem 0; }
@media (max-width: 50rem) { .responses { grid-template-columns: 1fr; } }
.response { border: 2px solid #767676; border-radius: 6px; padding: .75rem; }
.choices { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .5rem 0; }
.label { font-weight: 600; margin-right: .5rem; }
button { font: inherit; padding: .4rem .9rem; border: 2px solid #1a1a1a; border-radius: 6px;
         background: #fff; color: #1a1a1a; cursor: pointer; }
button[aria-pressed="true"] { background: #1a1a1a; color: #fff; }
button[type="submit"] { background: #0b5394; border-color: #0b5394; color: #fff; }
kbd { font-size: .8rem; border: 1px solid currentColor; border-radius: 3px; padding: 0 .25rem; }
textarea, input { font: inherit; width: 100%; max-width: 40rem; box-sizing: border-box;
                  border: 2px solid #767676; border-radius: 4px; padding: .3rem; color: #1a1a1a; }
input { max-width: 20rem; display: block; margin: .25rem 0; }
label { display: block; font-weight: 600; margin-top: .5rem; }
:focus-visible, button:focus, textarea:focus, input:focus, h2:focus {
  outline: 3px solid #005fcc; outline-offset: 2px; }
#status { min-height: 1.5em; font-weight: 600; }
#status.error { color: #b00020; }
"""

JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const rater = params.get("rater");
let item = null, side = null, busy = false;

function say(text, error) {
  const s = $("status"); s.textContent = text; s.className = error ? "error" : "";
}

async function api(path, body) {
  const opts = body ? {method: "POST", headers: {"Content-Type": "application/json"},
                       body: JSON.stringify(body)} : {};
  const r = await fetch(path, opts);
  const doc = await r.json().catch(() => ({error: "the server sent no JSON"}));
  if (!r.ok) throw new Error(doc.error || ("HTTP " + r.status));
  return doc;
}

function choose(s) {
  side = s;
  for (const b of document.querySelectorAll(".choice"))
    b.setAttribute("aria-pressed", String(b.dataset.side === s));
  const label = {left: "A is better", right: "B is better", tie: "Tie", skip: "Skip"}[s];
  say("Chosen: " + label + ". Press Enter to submit.");
  $("submit").focus();
}

function show(doc) {
  const p = doc.progress;
  $("progress").textContent = p.answered_by_you + " answered by you, " +
    p.items_needing_ratings + " of " + p.items + " items still need ratings";
  item = doc.item;
  if (!item) {
    $("rating").hidden = true; $("finished").hidden = false;
    $("finished-text").textContent = "You answered " + p.answered_by_you +
      " items. Nothing is left for you to rate right now.";
    $("finished-heading").focus();
    return;
  }
  const prompt = $("prompt"); prompt.textContent = "";
  for (const m of item.prompt) {
    const div = document.createElement("div");
    const role = document.createElement("span"); role.className = "role";
    role.textContent = m.role + ": ";
    div.append(role, document.createTextNode(m.content));
    prompt.append(div);
  }
  $("left").textContent = item.left;
  $("right").textContent = item.right;
  $("note").value = ""; side = null;
  for (const b of document.querySelectorAll(".choice")) b.setAttribute("aria-pressed", "false");
  $("item-heading").textContent = "Prompt (item " + (p.answered_by_you + 1) + ")";
  $("item-heading").focus();
}

async function submit() {
  if (busy || !item) return;
  if (!side) { say("Choose A, B, tie or skip first (keys 1, 2, 3, 0).", true); return; }
  busy = true;
  try {
    const doc = await api("/api/vote", {rater, item: item.id, side, note: $("note").value});
    show(doc);
    say("Saved.");
  } catch (e) {
    say("Not saved: " + e.message + ". Try again.", true);
  } finally { busy = false; }
}

const KEYS = {"1": "left", "a": "left", "2": "right", "b": "right", "3": "tie", "t": "tie",
              "0": "skip", "s": "skip"};

document.addEventListener("DOMContentLoaded", async () => {
  if (!rater) {
    $("login").hidden = false; $("rater-input").focus();
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      location.search = "?rater=" + encodeURIComponent($("rater-input").value.trim());
    });
    return;
  }
  $("rater-name").textContent = rater;
  $("rating").hidden = false;
  for (const b of document.querySelectorAll(".choice"))
    b.addEventListener("click", () => choose(b.dataset.side));
  $("vote").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("note").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT") return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k in KEYS) { e.preventDefault(); choose(KEYS[k]); }
    else if (k === "n") { e.preventDefault(); $("note").focus(); }
    else if (e.key === "Enter" && e.target.tagName !== "BUTTON" && e.target.tagName !== "A") {
      e.preventDefault(); submit();
    }
  });
  try { show(await api("/api/next?rater=" + encodeURIComponent(rater))); }
  catch (e) { say("Could not load an item: " + e.message, true); }
});
"""
