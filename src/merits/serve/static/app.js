// The merits serve page: paste a conversation or upload a recording, see each turn's emotion, the conversation's
// shares and its timeline, download predictions.csv. Plain JavaScript against the service's own API.
"use strict";

// colours no named emotion uses, for the classes of other corpora (never anger's red for an unknown name)
const PALETTE = ["#7b6d8d", "#2a9d8f", "#9c6644", "#577590", "#b5838d", "#6d6875", "#43aa8b", "#8d99ae", "#a98467",
                 "#3d5a80"];
let labels = [];
let last = null;  // the last answer, for the CSV download

const $ = (id) => document.getElementById(id);

// the usual emotion and sentiment names get the colours readers expect; other classes take the palette in order
// (with the feeling-wheel names of corpora such as EmoryNLP: joyful, mad, scared, peaceful, powerful)
const NAMED = {neutral: "#8a94a6", anger: "#d1495b", angry: "#d1495b", mad: "#d1495b", frustration: "#c0504d",
               frustrated: "#c0504d", joy: "#edae49", joyful: "#edae49", happiness: "#edae49", happy: "#edae49",
               excited: "#f28f3b", excitement: "#f28f3b", powerful: "#f28f3b", sadness: "#30638e", sad: "#30638e",
               fear: "#8e5572", scared: "#8e5572", surprise: "#00a6a6", surprised: "#00a6a6", disgust: "#6a994e",
               peaceful: "#90be6d", calm: "#90be6d", positive: "#4c9f70", negative: "#d1495b"};

function colour(label) {
  if (!label) return "#777";
  const name = label.toLowerCase();
  if (NAMED[name]) return NAMED[name];
  let h = 0;  // any other class: a colour of its own name (stable whatever the label order or corpus)
  for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function busy(on) {
  $("predict-text").disabled = on;
  $("predict-audio").disabled = on;
}

// A server started with API keys answers 401 without one: ask once, keep it for this tab only (sessionStorage, sent
// in a header: never a cookie, so no other site's page can use it).
async function call(url, options = {}, retried = false) {
  const key = sessionStorage.getItem("merits-api-key");
  const headers = {...(options.headers || {}), ...(key ? {Authorization: `Bearer ${key}`} : {})};
  const response = await fetch(url, {...options, headers});
  if (response.status === 401 && !retried) {
    const given = window.prompt("This server needs an API key:");
    if (given) {
      sessionStorage.setItem("merits-api-key", given.trim());
      return call(url, options, true);
    }
  }
  let body;
  try { body = await response.json(); } catch (e) { body = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function predictText() {
  const turns = $("conversation-text").value.split("\n").map((t) => t.trim()).filter((t) => t.length);
  if (!turns.length) { setStatus("Paste at least one turn (one per line).", true); return; }
  await run("Predicting…", () => call("/v1/predict", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({conversations: [{id: "pasted", turns: turns}]}),
  }));
}

async function predictAudio() {
  const files = $("audio-file").files;
  if (!files.length) { setStatus("Choose a recording first.", true); return; }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  await run("Transcribing and predicting… (Whisper, then every stage)", () =>
    call("/v1/predict/audio", {method: "POST", body: form}));
}

async function run(message, request) {
  busy(true);
  setStatus(message);
  const start = performance.now();
  try {
    const answer = await request();
    last = answer;
    render(answer);
    const turns = answer.conversations.reduce((n, c) => n + c.turns.length, 0);
    setStatus(`${turns} turn${turns === 1 ? "" : "s"} in ${answer.conversations.length} conversation` +
              `${answer.conversations.length === 1 ? "" : "s"}, ${((performance.now() - start) / 1000).toFixed(1)} s` +
              (answer.left_out.length ? `; left out: ${answer.left_out.join(", ")}` : ""));
  } catch (e) {
    setStatus(`Error: ${e.message}`, true);
  } finally {
    busy(false);
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function seconds(t) {
  return t === undefined ? "" : `${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, "0")}`;
}

function render(answer) {
  const root = $("conversations");
  root.replaceChildren();
  for (const conv of answer.conversations) {
    const box = el("div", {class: "conversation", "data-conversation": conv.id});
    const dominant = conv.dominant ? el("span", {class: "dominant"}, conv.dominant) : "none";
    box.append(el("h3", {}, `${conv.id}: mostly `, dominant, conv.tied && conv.tied.length > 1 ?
      ` (tied: ${conv.tied.join(", ")})` : ""));
    const shares = el("div", {class: "shares"});
    for (const name of answer.labels) {
      const share = conv.shares[name] || 0;
      shares.append(el("span", {}, name),
                    el("div", {}, el("div", {class: "bar", style: {width: `${(share * 100).toFixed(1)}%`,
                                                                   background: colour(name)}})),
                    el("span", {class: "share", "data-label": name}, `${(share * 100).toFixed(0)} %`));
    }
    box.append(shares);
    const timeline = el("div", {class: "timeline", "aria-label": "timeline"});
    for (const t of conv.turns) {
      timeline.append(el("span", {title: `turn ${t.turn}: ${t.label || "left out"}` +
        (t.confidence ? ` (${(t.confidence * 100).toFixed(0)} %)` : ""),
        style: {background: t.label ? colour(t.label) : "#ccc", opacity: t.confidence ? 0.35 + 0.65 * t.confidence : 1}}));
    }
    box.append(timeline);
    const timed = conv.turns.some((t) => t.start !== undefined);
    const head = el("tr", {}, el("th", {}, "turn"), ...(timed ? [el("th", {}, "time")] : []), el("th", {}, "text"),
                    el("th", {}, "emotion"), el("th", {}, "confidence"));
    const table = el("table", {class: "turns"}, el("thead", {}, head));
    const body = el("tbody");
    for (const t of conv.turns) {
      body.append(el("tr", {class: "turn"}, el("td", {}, String(t.turn)),
        ...(timed ? [el("td", {}, `${seconds(t.start)}–${seconds(t.end)}`)] : []), el("td", {class: "text"}, t.text),
        el("td", {}, t.label ? el("span", {class: "emotion", style: {background: colour(t.label)}}, t.label) : "left out"),
        el("td", {class: "confidence"}, t.confidence ? `${(t.confidence * 100).toFixed(0)} %` : "")));
    }
    table.append(body);
    box.append(table);
    root.append(box);
  }
  $("results").hidden = false;
}

function csvCell(v) {
  let s = v === null || v === undefined ? "" : String(v);
  // text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading quote (OWASP), as in
  // merits predict's predictions.csv
  if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function download() {
  if (!last) return;
  const stages = Object.keys(last.conversations[0]?.turns[0]?.stages || {});
  const header = ["conversation_id", "turn", "start", "end", "text", "predicted", "confidence",
                  ...last.labels.map((n) => `p_${n}`), ...stages.map((s) => `predicted_${s}`)];
  const lines = [header.join(",")];
  for (const c of last.conversations) {
    for (const t of c.turns) {
      const p = t.probabilities || {};
      lines.push([c.id, t.turn, t.start, t.end, t.text, t.label, t.confidence, ...last.labels.map((n) => p[n]),
                  ...stages.map((s) => t.stages[s])].map(csvCell).join(","));
    }
  }
  const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], {type: "text/csv"}));
  const a = el("a", {href: url, download: "predictions.csv"});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function init() {
  try {
    const info = await call("/health");
    labels = info.labels;
    $("run-info").textContent = `run ${info.run}: ${info.final_stage_label} · classes ${info.labels.join(", ")} · ` +
      `reads ${info.reads.join(" + ")}`;
  } catch (e) {
    setStatus(`The service does not answer: ${e.message}`, true);
  }
  $("predict-text").addEventListener("click", predictText);
  $("predict-audio").addEventListener("click", predictAudio);
  $("download").addEventListener("click", download);
}

init();
