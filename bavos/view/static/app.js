// bavos view: one result's frames with their masks, its objects and their presence, its cut moved live.
// Frames and ids come from the server as raw bytes; the blend is bavos's overlay rule (bavos/io/render.py),
// computed in float32 as NumPy does, so the page shows the pixels overlay.mp4's frames are made from.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const f32 = Math.fround;

function url(path, params = {}) {
  const q = new URLSearchParams({ ...params, token });
  return `${path}?${q}`;
}

// The server gone (Ctrl-C, a closed terminal): said once, on top, and playing stops; nothing else can work.
const GONE = "bavos view has stopped: the page cannot read or save anything until it runs again (the same command)";

async function ask(address, options) {
  try {
    return await fetch(address, options);
  } catch (e) {
    lost();
    throw new Error(GONE);
  }
}

function lost() {
  state.playing = false;
  $("play").innerHTML = "&#9654;";
  $("banner").textContent = GONE;
  $("banner").hidden = false;
  document.body.classList.add("gone");
}

async function getJSON(path, params) {
  const r = await ask(url(path, params));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function getBytes(path, params) {
  const r = await ask(url(path, params));
  if (!r.ok) throw new Error((await r.json()).error || r.statusText);
  return r.arrayBuffer();
}

const state = {
  results: [], index: -1, info: null, cut: null, k: 0, playing: false, alpha: 0.5, mode: "fill",
  hidden: new Set(), only: null, selected: null, ids: null, colours: new Map(), drawing: 0, cap: null,
  skipped: 0,
};

function cutParams() {
  return { level: state.cut ? state.cut.level : state.info.level, max_objects: state.cut ? state.cut.max_objects : state.info.max_objects };
}

// ---- results -------------------------------------------------------------------------------------------------
async function start() {
  await loadList();
  $("results").onchange = () => (Number($("results").value) < 0 ? showList() : openResult(Number($("results").value)));
  if (state.results.length > 1) showList();
  else await openResult(0);
}

// The results as they are now (a save or a bavos recut since changes their objects and previews).
async function loadList() {
  state.results = await getJSON("/api/results");
  const select = $("results");
  const shown = select.value;
  select.innerHTML = "";
  if (state.results.length > 1) select.add(new Option("all results", "-1"));
  state.results.forEach((r) => select.add(new Option(`${r.name} (${r.frames} frames, ${r.objects} objects)`, r.index)));
  select.hidden = state.results.length < 2;
  if (shown !== "") select.value = shown;
}

function showList() {
  const list = $("list");
  list.innerHTML = "";
  for (const r of state.results) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.index = r.index;
    card.innerHTML = `<img src="${url(`/api/results/${r.index}/preview.png`, { v: r.stamp })}" alt="">
      <div><b></b> · ${r.frames} frames · ${r.objects} objects${r.random ? " · random weights" : ""}</div>`;
    card.querySelector("b").textContent = r.name;
    card.querySelector("img").alt = `preview of ${r.name}`;
    card.onclick = () => openResult(r.index);
    list.appendChild(card);
  }
  list.hidden = false;
  $("viewer").hidden = true;
  state.playing = false;
  $("play").innerHTML = "&#9654;";
  $("results").value = "-1";
  $("summary").textContent = `${state.results.length} results`;
}

async function openResult(i, keep = false) {
  const same = keep && state.index === i;
  const kept = { k: state.k, hidden: new Set(state.hidden), only: state.only, selected: state.selected };
  state.playing = false;
  $("play").innerHTML = "&#9654;";
  state.index = i;
  $("summary").textContent = "loading…";
  state.info = await getJSON(`/api/results/${i}`);
  const info = state.info;
  $("results").value = String(i);
  $("list").hidden = true;
  $("viewer").hidden = false;
  $("summary").textContent = `${info.name}: ${info.frames} frames, ${info.width}x${info.height}, ${+info.fps.toFixed(3)} fps`;
  const problems = [
    info.random_weights ? info.note : null, info.source_problem, info.source_note, info.hierarchy_problem,
    info.files_problem,
  ].filter(Boolean);
  $("banner").textContent = problems.join(" · ");
  $("banner").hidden = problems.length === 0;
  const canvas = $("frame");
  canvas.width = info.width;
  canvas.height = info.height;
  fit();
  $("scrub").max = info.frames - 1;
  $("level").max = info.converged;
  $("level").value = info.level;
  $("cap").value = info.max_objects;
  state.alpha = info.overlay_alpha;
  $("alpha").value = info.overlay_alpha;
  state.cut = null;
  state.cap = null;
  state.hidden.clear();
  state.only = null;
  state.selected = null;
  state.k = 0;
  if (!same) $("saved").textContent = ""; // another result's message
  $("cuterr").textContent = "";
  await loadCut(info.level, info.max_objects);
  if (same) { // the cut just saved in place: the same ids, so the same view
    state.hidden = kept.hidden;
    state.only = kept.only;
    state.selected = kept.selected;
    renderObjects();
    drawLanes();
  }
  await show(same ? kept.k : 0);
}

// ---- the cut -------------------------------------------------------------------------------------------------
async function loadCut(level, maxObjects, note = "") {
  $("levelv").textContent = level;
  try {
    const cut = await getJSON(`/api/results/${state.index}/cut`, { level, max_objects: maxObjects });
    if (state.cut && (cut.level !== state.cut.level || cut.max_objects !== state.cut.max_objects)) {
      state.selected = null; // ids belong to their cut
      state.hidden.clear();
      state.only = null;
    }
    state.cut = cut;
    $("cuterr").textContent = [note, ...cut.warnings].filter(Boolean).join(" ");
  } catch (e) {
    $("cuterr").textContent = e.message; // as bavos recut says it
    if (state.cut) { // the controls show the cut that is shown (and saved)
      $("level").value = state.cut.level;
      $("cap").value = state.cut.max_objects;
      $("levelv").textContent = state.cut.level;
    }
    return false;
  }
  state.colours = new Map(state.cut.objects.map((o) => [o.id, hexRGB(o.colour)]));
  const c = state.cut;
  $("cutinfo").textContent = `level ${c.level}: ${c.clusters} clusters` +
    (c.capped_to !== null ? `, capped to ${c.capped_to}` : "") + `; ${c.objects.length} objects` +
    (c.objects.length > LISTED ? ` (the ${LISTED} largest listed)` : "");
  const picture = url(`/api/results/${state.index}/hierarchy.png`, { level: c.level, max_objects: c.max_objects });
  $("hier").hidden = true; // no broken image while it loads
  $("hier").onload = () => { $("hier").hidden = false; };
  $("hier").src = picture;
  $("hierlink").href = picture;
  renderObjects();
  drawLanes();
  return true;
}

// The frame shown as large as the page allows, its shape kept (so a pointer's place maps to one pixel).
function fit() {
  if (!state.info) return;
  const room = [$("player").clientWidth || 800, Math.max(240, window.innerHeight * 0.7)];
  const scale = Math.min(room[0] / state.info.width, room[1] / state.info.height);
  $("frame").style.width = `${Math.floor(state.info.width * scale)}px`;
  $("frame").style.height = `${Math.floor(state.info.height * scale)}px`;
}

function hexRGB(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

let cutTimer = null;
function cutChanged(ev) {
  clearTimeout(cutTimer);
  cutTimer = setTimeout(async () => {
    const level = Number($("level").value);
    const typed = $("cap").value.trim();
    if (!/^\d+$/.test(typed)) { // what --max-objects takes
      $("cuterr").textContent = "objects: a whole number, 0 or more (0: no cap)";
      return;
    }
    let cap = Number(typed);
    let note = "";
    if (ev && ev.target === $("level") && level !== state.info.converged && cap > 0) {
      // only the converged level keeps the centroids a cap needs: another level is shown whole, as the CLI's
      // --level L --max-objects 0 cuts it; the cap comes back with the converged level
      state.cap = cap;
      cap = 0;
      $("cap").value = 0;
      note = `a cap of objects needs the converged level (${state.info.converged}): objects set to 0, no cap.`;
    } else if (ev && ev.target === $("level") && level === state.info.converged && state.cap !== null && cap === 0) {
      cap = state.cap;
      $("cap").value = cap;
      state.cap = null;
    }
    if (await loadCut(level, cap, note)) await show(state.k);
  }, 120);
}

function visible(id) {
  if (id === 0) return false;
  if (state.only !== null) return id === state.only;
  return !state.hidden.has(id);
}

const LISTED = 400; // objects listed and laned, largest first: a level of thousands stays usable

function listed() {
  return state.cut ? state.cut.objects.slice(0, LISTED) : [];
}

function renderObjects() {
  const body = $("objects").querySelector("tbody");
  body.innerHTML = "";
  body.classList.toggle("only", state.only !== null);
  for (const o of listed()) {
    const tr = document.createElement("tr");
    tr.dataset.id = o.id;
    tr.className = o.id === state.selected ? "selected" : "";
    tr.innerHTML = `<td><span class="swatch" style="background:${o.colour}"></span></td><td>${o.id}</td>
      <td>${(100 * o.share).toFixed(o.share < 0.01 ? 2 : 1)} %</td>
      <td>${state.info.first_frame + o.first}-${state.info.first_frame + o.last}</td>
      <td><input type="checkbox" ${state.hidden.has(o.id) ? "" : "checked"}></td>
      <td><button class="${state.only === o.id ? "on" : ""}" title="show only this object">only</button></td>`;
    tr.querySelector("input").onclick = (ev) => {
      ev.stopPropagation();
      if (ev.target.checked) state.hidden.delete(o.id);
      else state.hidden.add(o.id);
      draw();
    };
    tr.querySelector("button").onclick = (ev) => {
      ev.stopPropagation();
      state.only = state.only === o.id ? null : o.id;
      renderObjects();
      draw();
    };
    tr.onclick = () => select(o.id);
    body.appendChild(tr);
  }
}

function select(id) {
  state.selected = state.selected === id ? null : id; // a second click lets go
  for (const tr of $("objects").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", Number(tr.dataset.id) === id);
    if (Number(tr.dataset.id) === id) tr.scrollIntoView({ block: "nearest" });
  }
  drawLanes();
}

// ---- lanes ---------------------------------------------------------------------------------------------------
const LANE = 8;
function drawLanes() {
  const canvas = $("lanes");
  const objects = listed();
  canvas.width = Math.max(200, canvas.clientWidth || 800);
  canvas.height = Math.max(LANE, objects.length * LANE);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const x = (k) => (k / state.info.frames) * canvas.width;
  objects.forEach((o, row) => {
    if (o.id === state.selected) {
      ctx.fillStyle = "#35507a";
      ctx.fillRect(0, row * LANE, canvas.width, LANE);
    }
    ctx.fillStyle = o.colour;
    for (const [a, b] of o.lanes) ctx.fillRect(x(a), row * LANE + 1, Math.max(1, x(b + 1) - x(a)), LANE - 2);
  });
  ctx.fillStyle = "#fff";
  ctx.fillRect(x(state.k), 0, 1, canvas.height);
}

// ---- frames --------------------------------------------------------------------------------------------------
async function show(k) {
  k = Math.max(0, Math.min(state.info.frames - 1, k));
  state.k = k;
  const ticket = ++state.drawing;
  const base = `/api/results/${state.index}`;
  const [frame, ids] = await Promise.all([
    state.info.source_problem ? Promise.resolve(null) : getBytes(`${base}/frame/${k}`),
    getBytes(`${base}/ids/${k}`, cutParams()),
  ]);
  if (ticket !== state.drawing) return; // a later frame was asked for meanwhile
  state.frame = frame ? new Uint8Array(frame) : null;
  state.ids = new Uint16Array(ids);
  $("scrub").value = k;
  const n = state.info.first_frame + k;
  $("pos").textContent = `frame ${n} · ${(n / state.info.fps).toFixed(3)} s` +
    (state.playing && state.skipped ? " · frames skipped to keep time" : "");
  draw();
  drawLanes();
}

function draw() {
  const { width: w, height: h } = state.info;
  const ids = state.ids;
  if (!ids) return;
  const frame = state.frame;
  const out = new ImageData(w, h);
  const px = out.data;
  const a = f32(state.alpha);
  const keep = f32(1 - state.alpha);
  const mode = state.mode;
  for (let p = 0; p < w * h; p++) {
    const id = ids[p];
    const on = visible(id);
    const colour = on ? state.colours.get(id) : null;
    let paint = on && colour;
    if (paint && mode === "outline") {
      const x = p % w;
      paint = (x > 0 && ids[p - 1] !== id) || (x < w - 1 && ids[p + 1] !== id) ||
        (p >= w && ids[p - w] !== id) || (p < w * (h - 1) && ids[p + w] !== id);
    }
    for (let c = 0; c < 3; c++) {
      const f = frame ? frame[3 * p + c] : 128;
      let v = f;
      if (mode === "cutout") v = on ? f : 0;
      else if (paint && mode === "outline") v = colour[c];
      else if (paint) v = Math.trunc(f32(f32(f32(f * keep) + f32(colour[c] * a)) + 0.5));
      px[4 * p + c] = v;
    }
    px[4 * p + 3] = 255;
  }
  const canvas = $("frame");
  canvas.getContext("2d").putImageData(out, 0, 0);
  canvas.dataset.frame = state.k; // what is drawn, for scripts and tests
  canvas.dataset.cut = `${state.cut ? state.cut.level : ""}/${state.cut ? state.cut.max_objects : ""}`;
}

function idAt(ev) {
  const canvas = $("frame");
  const r = canvas.getBoundingClientRect();
  const x = Math.floor(((ev.clientX - r.left) / r.width) * canvas.width);
  const y = Math.floor(((ev.clientY - r.top) / r.height) * canvas.height);
  if (!state.ids || x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return null;
  return state.ids[y * canvas.width + x];
}

// ---- playing -------------------------------------------------------------------------------------------------
// In real time, as a player does: where a frame takes longer to fetch and draw than the video shows it, the frames
// between are skipped (said beside the time), and scrubbing while playing goes on from there.
async function play() {
  state.playing = !state.playing;
  $("play").innerHTML = state.playing ? "&#10074;&#10074;" : "&#9654;";
  const period = 1000 / state.info.fps;
  let t0 = performance.now();
  let k0 = state.k >= state.info.frames - 1 ? -1 : state.k; // from the start once at the end
  let last = state.k;
  state.skipped = 0;
  while (state.playing) {
    if (state.k !== last) { t0 = performance.now(); k0 = state.k; last = state.k; } // moved by hand meanwhile
    let next = Math.max(last + 1, k0 + Math.floor((performance.now() - t0) / period) + 1);
    if (next >= state.info.frames) { // again from the start
      if (last < state.info.frames - 1) next = state.info.frames - 1;
      else { t0 = performance.now(); k0 = -1; next = 0; }
    }
    state.skipped = next > last + 1 && next !== 0 ? next - last - 1 : 0;
    await show(next);
    last = state.k;
    const wait = t0 + (next - k0) * period - performance.now();
    if (wait > 0) await new Promise((done) => setTimeout(done, wait));
  }
  state.skipped = 0;
}

// ---- saving --------------------------------------------------------------------------------------------------
// The cut's controls wait while a save writes (the cut saved is the one shown when it was asked for).
async function save() {
  const name = $("savename").value.trim();
  const index = state.index; // the result saved, whatever is shown when the answer comes
  const saved = $("saved");
  saved.className = "";
  saved.textContent = "saving…";
  for (const id of ["save", "level", "cap"]) $(id).disabled = true;
  try {
    const r = await ask(url(`/api/results/${index}/save`), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...cutParams(), name: name || null, stamp: state.info.stamp }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error);
    await loadList();
    if (state.index !== index) { saved.textContent = ""; return; } // another result is shown now
    saved.className = "done";
    saved.textContent = `saved ${body.output}: level ${body.level}, ${body.objects} objects`;
    if (!name) await openResult(index, true);
  } catch (e) {
    saved.className = "error";
    // the server stopped before answering: it finishes a save before it stops, so the save may be there
    saved.textContent = e.message === GONE ? "no answer: the viewer stopped; the save may have been written" : e.message;
  } finally {
    for (const id of ["save", "level", "cap"]) $(id).disabled = false;
  }
}

// ---- wiring --------------------------------------------------------------------------------------------------
function wire() {
  $("scrub").oninput = () => show(Number($("scrub").value));
  $("play").onclick = play;
  $("alpha").oninput = () => { state.alpha = Number($("alpha").value); draw(); };
  $("mode").onchange = () => { state.mode = $("mode").value; draw(); };
  $("all").onclick = () => {
    state.hidden.clear();
    state.only = null;
    state.selected = null;
    renderObjects();
    draw();
    drawLanes();
  };
  $("level").oninput = cutChanged;
  $("cap").oninput = cutChanged;
  $("save").onclick = save;
  const canvas = $("frame");
  canvas.onmousemove = (ev) => {
    const id = idAt(ev);
    const hover = $("hover");
    hover.hidden = id === null;
    if (id === null) return;
    hover.textContent = id === 0 ? "background (id 0)" : `object ${id}`;
    hover.style.left = `${ev.offsetX + 12}px`;
    hover.style.top = `${ev.offsetY + 12}px`;
  };
  canvas.onmouseleave = () => { $("hover").hidden = true; };
  canvas.onclick = (ev) => {
    const id = idAt(ev);
    if (id !== null && id > 0) select(id);
  };
  const laneAt = (ev) => {
    const r = $("lanes").getBoundingClientRect();
    const row = Math.floor(((ev.clientY - r.top) / r.height) * ($("lanes").height / LANE));
    return [listed()[row], Math.floor(((ev.clientX - r.left) / r.width) * state.info.frames)];
  };
  $("lanes").onclick = (ev) => {
    const [object, k] = laneAt(ev);
    if (object && object.id !== state.selected) select(object.id);
    show(k);
  };
  $("lanes").onmousemove = (ev) => {
    const [object, k] = laneAt(ev);
    $("lanes").title = object ? `object ${object.id} · frame ${state.info.first_frame + k} (click: select it, go there)` : "";
  };
  window.onresize = () => { fit(); drawLanes(); };
  document.onkeydown = (ev) => {
    // a focused control keeps its keys: a slider, box or menu all of them, a button space and Enter; the frame's
    // scrub moves itself with the arrows (and shows the frame), and leaves space to play
    const tag = ev.target.tagName;
    if (["SELECT", "TEXTAREA"].includes(tag) || (tag === "INPUT" && ev.target !== $("scrub"))) return;
    if (ev.target === $("scrub") && ev.key !== " ") return;
    if (tag === "BUTTON" && (ev.key === " " || ev.key === "Enter")) return;
    if (ev.key === "ArrowRight") { ev.preventDefault(); show(state.k + 1); }
    if (ev.key === "ArrowLeft") { ev.preventDefault(); show(state.k - 1); }
    if (ev.key === " ") { ev.preventDefault(); play(); }
  };
}

wire();
start().catch((e) => {
  $("banner").textContent = e.message;
  $("banner").hidden = false;
});
