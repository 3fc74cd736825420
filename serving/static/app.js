// The page: posts the form to /v1/predict and shows the label, a bar per label and similar tickets.
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

function showResult(body) {
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
    info.append(head, el("p", { class: "text" }, s.text || "(no text)"));
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
preview($("voice"), $("voice-preview"));
$("ticket").addEventListener("submit", submit);
checkReady();
