// The asen-search page: search, explain and rerank through the public HTTP API (no build step).
(() => {
  "use strict";

  const THUMB_SIZE = 320;         // GET /images/{id}?size=: pixels a side of a result thumbnail
  const PREVIEW_SIZE = 640;
  const EXPLAIN_PARALLEL = 2;     // explanation requests in flight at once

  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const imageInput = $("image-input");
  const dropZone = $("drop-zone");
  const itemInput = $("item-input");
  const attributeSelect = $("attribute-select");
  const topKInput = $("top-k-input");
  const explainToggle = $("explain-toggle");
  const preview = $("query-preview");
  const previewImage = $("query-image");
  const previewCaption = $("query-caption");
  const rerankForm = $("rerank-form");
  const candidatesInput = $("candidates-input");
  const weightInput = $("weight-input");
  const resultsSection = $("results-section");
  const resultsList = $("results");
  const errorBox = $("error");
  const statusLine = $("status");
  const legend = $("legend");
  const cardTemplate = $("card-template");

  let uploaded = null;            // the chosen or dropped File, when the query is an upload
  let previewUrl = null;
  let generation = 0;             // a newer search makes older answers (and their explanations) stale
  const explanations = new Map(); // "attribute|query key" -> explanation JSON
  const drawn = new WeakMap();    // frame element -> the explanation drawn on it

  // -- talking to the API ------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, body) {
    let response;
    try {
      response = await fetch(path, body ? { method: "POST", body } : {});
    } catch (err) {
      throw new ApiError(0, "network_error", `the service could not be reached (${err.message})`);
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      const code = payload && payload.error ? payload.error : `http_${response.status}`;
      const detail = payload && payload.detail ? payload.detail : response.statusText || "request failed";
      throw new ApiError(response.status, code, detail);
    }
    return payload;
  }

  function imageUrl(id, size) {
    const path = id.split("/").map(encodeURIComponent).join("/");
    return `/images/${path}?size=${size}`;
  }

  function currentQuery() {
    const id = itemInput.value.trim();
    if (id) return { kind: "item", id, key: `item:${id}` };
    if (uploaded) {
      const f = uploaded;
      return { kind: "image", file: f, key: `file:${f.name}:${f.size}:${f.lastModified}` };
    }
    return null;
  }

  function queryForm(query) {
    const data = new FormData();
    data.append("attribute", attributeSelect.value);
    if (query.kind === "item") data.append("item_id", query.id);
    else data.append("image", query.file, query.file.name || "query");
    return data;
  }

  // -- messages ----------------------------------------------------------------------------
  function showError(err) {
    errorBox.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = "Error: ";
    const text = document.createTextNode(err.message);
    errorBox.append(title, text);
    if (err.code) {
      const code = document.createElement("span");
      code.className = "code";
      code.textContent = ` (${err.code}${err.status ? `, HTTP ${err.status}` : ""})`;
      errorBox.append(code);
    }
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  // -- query preview -----------------------------------------------------------------------
  function showPreview(query) {
    clearOverlay(preview.querySelector(".frame"));
    preview.classList.remove("no-image");
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    if (query.kind === "item") {
      previewImage.src = imageUrl(query.id, PREVIEW_SIZE);
      previewImage.alt = `Query: catalogue item ${query.id}`;
      previewCaption.textContent = `Query: catalogue item ${query.id}`;
    } else {
      previewUrl = URL.createObjectURL(query.file);
      previewImage.src = previewUrl;
      previewImage.alt = `Query: uploaded image ${query.file.name}`;
      previewCaption.textContent = `Query: ${query.file.name || "uploaded image"}`;
    }
    preview.hidden = false;
  }

  previewImage.addEventListener("error", () => preview.classList.add("no-image"));

  // -- results -----------------------------------------------------------------------------
  function formatScore(value) {
    return value.toFixed(3);
  }

  function renderResults(hits, reranked) {
    const attribute = attributeSelect.value;
    const cards = hits.map((hit, rank) => {
      const card = cardTemplate.content.firstElementChild.cloneNode(true);
      card.dataset.id = hit.id;
      const pick = card.querySelector(".pick");
      pick.setAttribute("aria-label", `Search from ${hit.id}`);
      pick.title = `Search from ${hit.id}`;
      pick.addEventListener("click", () => searchFromItem(hit.id));
      const img = card.querySelector("img");
      img.src = imageUrl(hit.id, THUMB_SIZE);
      img.addEventListener("error", () => card.classList.add("no-image"), { once: true });
      card.querySelector(".rank").textContent = `${rank + 1}.`;
      card.querySelector(".id").textContent = hit.id;
      let score = `score ${formatScore(hit.score)}`;
      if (reranked) score += ` · similarity ${formatScore(hit.similarity)} · was ${hit.position + 1}.`;
      card.querySelector(".score").textContent = score;
      const list = card.querySelector("dl");
      for (const [key, value] of Object.entries(hit.metadata)) {
        const pair = document.createElement("div");
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
        if (key === attribute) pair.className = "match";
        pair.append(dt, dd);
        list.append(pair);
      }
      return card;
    });
    resultsList.replaceChildren(...cards);
  }

  function timing(response) {
    return response && response.ms !== undefined ? ` in ${response.ms} ms` : "";
  }

  async function timed(promise) {
    const start = performance.now();
    const body = await promise;
    body.ms = Math.round(performance.now() - start);
    return body;
  }

  async function runSearch({ focusResults = false } = {}) {
    const query = currentQuery();
    if (!query) {
      showError(new ApiError(0, "", "choose an image or type a catalogue item id first"));
      return;
    }
    const mine = ++generation;
    clearError();
    showPreview(query);
    const data = queryForm(query);
    data.append("top_k", topKInput.value || "12");
    resultsSection.setAttribute("aria-busy", "true");
    setStatus(`Searching for ${attributeSelect.value}…`);
    try {
      const body = await timed(api("/search", data));
      if (mine !== generation) return;
      renderResults(body.results, false);
      setStatus(`${body.results.length} results for ${body.attribute}${timing(body)}.`);
      if (focusResults) $("results-heading").focus();
      if (explainToggle.checked) explainAll(mine);
    } catch (err) {
      if (mine !== generation) return;
      resultsList.replaceChildren();
      setStatus("No results.");
      showError(err);
    } finally {
      if (mine === generation) resultsSection.removeAttribute("aria-busy");
    }
  }

  async function runRerank() {
    const query = currentQuery();
    const candidates = candidatesInput.value.split(/[\s,]+/).filter(Boolean);
    if (!query) {
      showError(new ApiError(0, "", "choose an image or type a catalogue item id first: the ids are reranked by similarity to it"));
      return;
    }
    if (!candidates.length) {
      showError(new ApiError(0, "", "paste at least one catalogue id to rerank"));
      candidatesInput.focus();
      return;
    }
    const mine = ++generation;
    clearError();
    showPreview(query);
    const data = queryForm(query);
    for (const id of candidates) data.append("candidates", id);
    data.append("weight", weightInput.value || "1");
    resultsSection.setAttribute("aria-busy", "true");
    setStatus(`Reranking ${candidates.length} ids for ${attributeSelect.value}…`);
    try {
      const body = await timed(api("/rerank", data));
      if (mine !== generation) return;
      renderResults(body.results, true);
      let text = `${body.results.length} ids reranked for ${body.attribute}${timing(body)}.`;
      if (body.unknown.length) text += ` Not in the catalogue: ${body.unknown.join(", ")}.`;
      if (body.duplicates.length) text += ` Sent more than once: ${body.duplicates.join(", ")}.`;
      setStatus(text);
      if (explainToggle.checked) explainAll(mine);
    } catch (err) {
      if (mine !== generation) return;
      setStatus("Not reranked.");
      showError(err);
    } finally {
      if (mine === generation) resultsSection.removeAttribute("aria-busy");
    }
  }

  function searchFromItem(id) {
    itemInput.value = id;
    forgetUpload();
    runSearch({ focusResults: true });
  }

  function forgetUpload() {
    uploaded = null;
    imageInput.value = "";
  }

  // -- explanations ------------------------------------------------------------------------
  async function explanationFor(query) {
    const key = `${attributeSelect.value}|${query.key}`;
    if (!explanations.has(key)) {
      const pending = api("/explain", queryForm(query));
      explanations.set(key, pending);
      pending.catch(() => explanations.delete(key));
    }
    return explanations.get(key);
  }

  async function explainAll(mine) {
    const query = currentQuery();
    if (!query) return;
    legend.hidden = false;
    const jobs = [{ frame: preview.querySelector(".frame"), query }];
    for (const card of resultsList.children) {
      if (!card.classList.contains("no-image")) {
        const id = card.dataset.id;
        jobs.push({ frame: card.querySelector(".frame"), query: { kind: "item", id, key: `item:${id}` } });
      }
    }
    let failed = null;
    const worker = async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) {
        try {
          const explanation = await explanationFor(job.query);
          if (mine !== generation || !explainToggle.checked) return;
          drawExplanation(job.frame, explanation);
        } catch (err) {
          failed = failed || err;
        }
      }
    };
    await Promise.all(Array.from({ length: EXPLAIN_PARALLEL }, worker));
    if (failed && mine === generation && explainToggle.checked) showError(failed);
  }

  function clearOverlay(frame) {
    const canvas = frame.querySelector("canvas");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    drawn.delete(frame);
    frame.classList.remove("explained");
  }

  function clearAllOverlays() {
    legend.hidden = true;
    document.querySelectorAll(".frame").forEach(clearOverlay);
  }

  // Colour of an attention value v in [0, 1]: blue (low) through yellow to red (high).
  const STOPS = [[0, [40, 60, 200]], [0.35, [30, 200, 220]], [0.6, [250, 230, 40]], [1, [230, 20, 20]]];
  function colour(v) {
    for (let i = 1; i < STOPS.length; i++) {
      const [t1, c1] = STOPS[i];
      const [t0, c0] = STOPS[i - 1];
      if (v <= t1) {
        const f = (v - t0) / (t1 - t0);
        return c0.map((c, k) => Math.round(c + f * (c1[k] - c)));
      }
    }
    return STOPS[STOPS.length - 1][1];
  }

  function heatmap(attention) {
    const rows = attention.length;
    const cols = attention[0].length;
    const canvas = document.createElement("canvas");
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(cols, rows);
    attention.forEach((row, y) => row.forEach((v, x) => {
      const [r, g, b] = colour(v);
      pixels.data.set([r, g, b, Math.round(255 * (0.1 + 0.6 * v))], 4 * (y * cols + x));
    }));
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }

  // Draw an explanation over a frame whose image is shown with `object-fit: contain`.
  function drawExplanation(frame, ex) {
    drawn.set(frame, ex);
    frame.classList.add("explained");
    const canvas = frame.querySelector("canvas");
    const width = frame.clientWidth;
    const height = frame.clientHeight;
    if (!width || !height) return;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const scale = Math.min(width / ex.width, height / ex.height);
    const left = (width - ex.width * scale) / 2;
    const top = (height - ex.height * scale) / 2;
    const at = ([x0, y0, x1, y1]) => [left + x0 * scale, top + y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale];
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, ex.width * scale, ex.height * scale);
    ctx.clip();
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(heatmap(ex.attention), ...at(ex.image_box));
    ctx.restore();
    if (ex.roi_box) {
      const box = at(ex.roi_box);
      ctx.lineWidth = 4;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
      ctx.strokeRect(...box);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(...box);
    }
  }

  const resized = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const ex = drawn.get(entry.target);
      if (ex) drawExplanation(entry.target, ex);
    }
  });
  const observeFrames = () => document.querySelectorAll(".frame").forEach((f) => resized.observe(f));
  new MutationObserver(observeFrames).observe(resultsList, { childList: true });
  observeFrames();

  // -- choosing the query ------------------------------------------------------------------
  function useFile(file) {
    if (!file) return;
    uploaded = file;
    itemInput.value = "";
    runSearch();
  }

  imageInput.addEventListener("change", () => useFile(imageInput.files[0]));

  // A file dropped anywhere on the page becomes the query (and never replaces the page).
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
  for (const type of ["dragleave", "dragend"]) {
    window.addEventListener(type, () => dropZone.classList.remove("dragging"));
  }
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try {
      imageInput.files = files;     // shows the dropped file's name in the input
    } catch (err) {
      // older browsers: the input keeps its old text; the dropped file is used all the same
    }
    useFile(files[0]);
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  rerankForm.addEventListener("submit", (event) => {
    event.preventDefault();
    runRerank();
  });
  attributeSelect.addEventListener("change", () => {
    if (currentQuery()) runSearch();
  });
  explainToggle.addEventListener("change", () => {
    if (explainToggle.checked) {
      if (resultsList.children.length) explainAll(generation);
    } else {
      clearAllOverlays();
    }
  });

  // -- start -------------------------------------------------------------------------------
  async function loadAttributes() {
    try {
      const body = await api("/attributes");
      const options = body.attributes.map((attribute) => {
        const option = document.createElement("option");
        option.value = attribute.name;
        option.textContent = attribute.name.replace(/_/g, " ");
        option.title = attribute.values.join(", ");
        return option;
      });
      attributeSelect.replaceChildren(...options);
      document.body.dataset.ready = "true";
    } catch (err) {
      showError(err);
    }
  }

  loadAttributes();
})();
