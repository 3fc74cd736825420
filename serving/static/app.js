// The page: posts the form to /v1/predict and shows the label, a bar per label, what the voice note says
// and the screenshot shows (under each upload), and similar tickets with the words they matched by.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;  // textContent only: nothing from a response is parsed as HTML
  return node;
}

function preview(input, target) {
  input.addEventListener("change", () => {
    const file = input.files[0];
    target.hidden = !file;
    if (file) target.src = URL.createObjectURL(file);
  });
}

// Sign-in (a token-protected service): the token is posted once, in the body, for an HttpOnly session
// cookie the browser then sends by itself; this script never sees or stores the token afterwards.
async function checkSession() {
  let state = { needed: false, signed_in: false };
  try {
    const r = await fetch("/v1/session");
    if (r.ok) state = await r.json();
  } catch (e) { /* the service does not answer: checkReady says so */ }
  const locked = state.needed && !state.signed_in;
  $("sign-in").hidden = !locked;
  $("ticket").hidden = locked;
  $("sign-out").hidden = !(state.needed && state.signed_in);
  if (locked) $("status").textContent = "sign in to use this service";
  else checkReady();
}

async function signIn(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("token", $("token").value);
  $("token").value = "";
  const r = await fetch("/v1/session", { method: "POST", body: form });
  $("sign-in-failure").hidden = r.ok;
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    $("sign-in-failure").textContent = `${r.status} ${body.message || "sign-in refused"}`;
  }
  checkSession();
}

async function signOut() {
  await fetch("/v1/session", { method: "DELETE" });
  ["result", "similar-section"].forEach((id) => { $(id).hidden = true; });
  checkSession();
}

async function checkReady() {
  try {
    const r = await fetch("/readyz");
    const body = await r.json();
    $("status").textContent = r.ok
      ? `ready: ${body.items} past tickets, labels ${body.labels.join(", ")}`
      : `not ready (${body.status}${body.error ? ": " + body.error : ""})`;
    if (!r.ok && body.status === "loading") setTimeout(checkReady, 1000);
  } catch (e) {
    $("status").textContent = "the service does not answer";
  }
}

// What an upload's words were read as: the transcript under the voice note, the screen text under the
// screenshot; "(no speech)" / "(no text)" when there are none; hidden when nothing was uploaded.
function showWords(id, text, none, detail) {
  const box = $(id);
  box.hidden = text === null || text === undefined;
  if (box.hidden) return;
  const said = box.querySelector(".said");
  said.textContent = text || none;
  said.classList.toggle("muted", !text);
  box.title = detail || "";
}

const PREFIX = { said: "said: ", on_screen: "on screen: ", text: "" };
const MATCHED = { text: "text", speech: "said", screen: "on_screen" };

// A similar ticket's words: its typed text, what its note said, what its screen showed; the one its
// score matched by comes first and is marked.
function ticketWords(s) {
  const words = s.words || {};
  const first = MATCHED[s.matched];
  const names = ["text", "said", "on_screen"].sort((a, b) => (b === first) - (a === first));
  const out = [];
  for (const name of names) {
    if (!words[name]) continue;
    const p = el("p", { class: "text" + (name === first ? " matched" : ""), "data-words": name },
      PREFIX[name] + words[name].split("\n").join(" / "));
    out.push(p);
  }
  if (!out.length) out.push(el("p", { class: "text muted" }, s.text || "(no text)"));
  return out;
}

function showResult(body) {
  const t = body.transcript;
  showWords("transcript", t ? t.text : null, "(no speech)",
    t && t.text ? `${t.language || "?"}, ${t.speech_seconds ?? "?"} s of speech` : (t && t.no_words) || "");
  showWords("screen-text", body.screen_text, "(no text on the screenshot)");
  $("predicted").textContent = body.predicted;
  const bars = $("bars");
  bars.replaceChildren();
  const entries = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const row = el("div", { class: "bar" + (label === body.predicted ? " top" : ""), "data-label": label });
    row.append(el("span", { class: "name" }, label));
    const track = el("span", { class: "track" });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    row.append(track, el("span", { class: "p" }, `${(100 * p).toFixed(1)}%`));
    bars.append(row);
  }
  $("missing").textContent = body.missing_modalities.length
    ? `missing: ${body.missing_modalities.join(", ")} (the model used the rest)` : "all modalities used";
  const errors = $("errors");
  errors.replaceChildren(...body.errors.map((e) => el("li", {}, `${e.modality}: ${e.error} — ${e.message}`)));
  $("timings").textContent = "timings (ms): " + Object.entries(body.timings_ms).map(([k, v]) => `${k} ${v}`).join(", ");
  $("result").hidden = false;

  const list = $("similar");
  list.replaceChildren();
  for (const s of body.similar) {
    const li = el("li", { class: "ticket", "data-id": s.id });
    if (s.image) {
      const img = el("img", { src: s.image, alt: `screenshot of ${s.id}` });
      img.addEventListener("error", () => img.remove());  // a screenshot the pipeline cannot decode
      li.append(img);
    }
    const info = el("div");
    const head = el("p", { class: "head" });
    head.append(el("span", { class: "label" }, s.label || "?"), el("span", { class: "muted" }, ` ${s.id} · score ${s.score.toFixed(3)}`));
    info.append(head, ...ticketWords(s));
    li.append(info);
    list.append(li);
  }
  $("similar-section").hidden = body.similar.length === 0;
}

async function submit(event) {
  event.preventDefault();
  const form = new FormData();
  const text = $("message").value.trim();
  if (text) form.append("text", text);
  if ($("screenshot").files[0]) form.append("image", $("screenshot").files[0]);
  if ($("voice").files[0]) form.append("audio", $("voice").files[0]);
  $("failure").hidden = true;
  $("submit").disabled = true;
  $("submit").textContent = "Predicting…";
  try {
    const r = await fetch("/v1/predict", { method: "POST", body: form });
    if (r.status === 401) checkSession();  // signed out or expired: back to the sign-in form
    const body = await r.json();
    if (!r.ok) {
      const details = (body.errors || []).map((e) => `${e.modality}: ${e.error}`).join("; ");
      throw new Error(`${r.status} ${body.error}: ${body.message}${details ? " (" + details + ")" : ""}`);
    }
    showResult(body);
  } catch (e) {
    $("failure").textContent = e.message;
    $("failure").hidden = false;
  } finally {
    $("submit").disabled = false;
    $("submit").textContent = "Predict";
  }
}

preview($("screenshot"), $("screenshot-preview"));
$("screenshot").addEventListener("change", () => { $("screen-text").hidden = true; });
$("voice").addEventListener("change", () => { $("transcript").hidden = true; });
preview($("voice"), $("voice-preview"));
$("ticket").addEventListener("submit", submit);
$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
checkSession();
