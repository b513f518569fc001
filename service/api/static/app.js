// The asen-search page: search, explain and rerank through the public HTTP API (no build step).
// Two ways to ask: one attribute (an image or an item, `attribute`), or a composed query of several
// weighted parts (`query`: each part an attribute with an image, an item or a value). Either returns
// the best k items, or every item at or above a threshold (`min_score`, or for one attribute
// `min_precision` through its precision curve), at most `max_results`.
(() => {
  "use strict";

  const THUMB_SIZE = 320;         // GET /images/{id}?size=: pixels a side of a result thumbnail
  const PREVIEW_SIZE = 640;
  const PART_THUMB_SIZE = 160;
  const EXPLAIN_PARALLEL = 2;     // explanation requests in flight at once
  const RATE_RETRIES = 5;         // an explanation refused by the rate limit (429) is retried this often,
  const RATE_WAIT_MAX_S = 10;     // after its Retry-After, waiting at most this long each time
  const DEBOUNCE_MS = 250;        // a composed query or a threshold is sent once it stops changing for this long
  const COLOUR_NAMES = ["colour", "color"];

  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const imageInput = $("image-input");
  const dropZone = $("drop-zone");
  const itemInput = $("item-input");
  const attributeSelect = $("attribute-select");
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
  const partTemplate = $("part-template");
  const singleMode = $("single-mode");
  const composedForm = $("composed-mode");
  const partsList = $("parts");
  const addPartButton = $("add-part");
  const modeRadios = document.querySelectorAll("input[name='mode']");

  let uploaded = null;            // the chosen or dropped File, when the query is an upload
  let previewUrl = null;
  let generation = 0;             // a newer search makes older answers (and their explanations) stale
  let inflight = null;            // AbortController of the search or rerank request in flight
  let debounce = null;            // timer of a query waiting to be sent (a composed one, or a threshold)
  let mode = "single";            // "single": one attribute; "composed": the parts below
  let attributes = [];            // GET /attributes: [{name, values, value_search, precision_scores}]
  const parts = [];               // the composed query's parts, in the order shown
  let partSerial = 0;             // names each part's controls and its uploaded file field
  const explanations = new Map(); // "attribute|query key" -> explanation JSON
  const drawn = new WeakMap();    // frame element -> the explanation drawn on it

  // -- talking to the API ------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, detail, retryAfter = 0) {
      super(detail);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;   // seconds, from Retry-After (429 rate_limited, 503 overloaded)
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function api(path, body, signal) {
    let response;
    try {
      response = await fetch(path, body ? { method: "POST", body, signal } : { signal });
    } catch (err) {
      if (signal && signal.aborted) throw err;    // superseded by a newer request: nothing to report
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
      throw new ApiError(response.status, code, detail, Number(response.headers.get("Retry-After")) || 0);
    }
    return payload;
  }

  // A newer request makes the one in flight stale: cancel it (and a composed query still waiting).
  function supersede() {
    clearTimeout(debounce);
    debounce = null;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    return { mine: ++generation, signal: inflight.signal };
  }

  function human(name) {
    return String(name).replace(/_/g, " ");
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

  // -- results: the best k, or every item at or above a threshold ----------------------------
  // Each way of asking has its "Results" controls: top k, or a threshold on the score (a slider over
  // the range scores can take) or, for one attribute with a precision curve, on the precision.
  function limitControls(root) {
    const role = (name) => root.querySelector(`[data-role='${name}']`);
    const box = (name) => root.querySelector(`[data-box='${name}']`);
    return {
      kinds: [...root.querySelectorAll("input[data-role='kind']")],
      bys: [...root.querySelectorAll("input[data-role='by']")],
      topK: role("top-k"),
      score: role("min-score"),
      precision: role("min-precision"),
      maxResults: role("max-results"),
      topKBox: box("top_k"),
      thresholdBox: box("threshold"),
      scoreBox: box("score"),
      precisionBox: box("precision"),
      noPrecision: root.querySelector(".no-precision"),
      translated: root.querySelector(".translated"),
      scale: root.querySelector(".scale"),
      bound: 1,                   // scores lie in [-bound, bound]: 1 for one attribute, sum |weight| composed
    };
  }

  const singleLimit = limitControls($("single-limit"));
  const composedLimit = limitControls($("composed-limit"));
  const topKInput = singleLimit.topK;
  const composedTopK = composedLimit.topK;

  const chosen = (radios) => (radios.find((radio) => radio.checked) || radios[0]).value;
  const kindOf = (limit) => chosen(limit.kinds);         // "top_k" or "threshold"
  const byOf = (limit) => chosen(limit.bys);             // "score" or "precision"
  const sliderValue = (input) => Math.round(Number(input.value) * 100) / 100;

  function showLimit(limit) {
    const threshold = kindOf(limit) === "threshold";
    const byPrecision = byOf(limit) === "precision";
    limit.topKBox.hidden = threshold;
    limit.thresholdBox.hidden = !threshold;
    limit.scoreBox.hidden = byPrecision;
    limit.precisionBox.hidden = !byPrecision;
    limit.scoreBox.querySelector("output").textContent = sliderValue(limit.score).toFixed(2);
    limit.precisionBox.querySelector("output").textContent = sliderValue(limit.precision).toFixed(2);
    if (!byPrecision) limit.translated.hidden = true;
  }

  // The precision slider is offered only where a curve translates it: `why` says why not (null: offered).
  function offerPrecision(limit, why) {
    const radio = limit.bys.find((r) => r.value === "precision");
    radio.disabled = why !== null;
    limit.noPrecision.hidden = why === null;
    limit.noPrecision.textContent = why || "";
    if (why !== null && radio.checked) limit.bys.find((r) => r.value === "score").checked = true;
    showLimit(limit);
  }

  function setBound(limit, bound) {
    limit.bound = bound;
    const edge = Math.round(bound * 100) / 100;
    limit.score.min = String(-edge);
    limit.score.max = String(edge);
    showLimit(limit);             // the browser moved the thumb inside a narrower range
  }

  // The fields of a POST /search that size its answer.
  function appendLimit(limit, data) {
    if (kindOf(limit) === "top_k") {
      data.append("top_k", limit.topK.value || "12");
      return;
    }
    if (byOf(limit) === "precision") {
      data.append("min_precision", String(sliderValue(limit.precision)));
    } else {
      data.append("min_score", String(Math.min(limit.bound, Math.max(-limit.bound, sliderValue(limit.score)))));
    }
    data.append("max_results", limit.maxResults.value || "100");
  }

  // "37 items at score ≥ 0.82 for …", or "100 shown, more pass (truncated): …" when max_results cut the list.
  function thresholdSummary(body, what) {
    const { min_score: score, min_precision: precision, unreachable } = body.threshold;
    if (unreachable) return `No items ${what}: ${unreachable}.`;   // a threshold no score reaches
    const at = typeof precision === "number"
      ? `precision ≥ ${precision.toFixed(2)} (score ≥ ${score.toFixed(4)})` : `score ≥ ${score.toFixed(2)}`;
    const n = body.results.length;
    if (body.truncated) {
      return `${n} shown, more pass (truncated): ${at} ${what}${timing(body)}.`;
    }
    if (!n) return `No items at ${at} ${what}${timing(body)}.`;
    return `${n} ${n === 1 ? "item" : "items"} at ${at} ${what}${timing(body)}.`;
  }

  // The score a min_precision was translated to, beside the precision slider.
  function showTranslated(limit, body, attribute) {
    const threshold = body && body.threshold;
    const translated = threshold && typeof threshold.min_precision === "number";
    limit.translated.hidden = !translated;
    limit.translated.textContent = !translated ? "" : threshold.unreachable
      ? `Precision ${threshold.min_precision.toFixed(2)} for ${human(attribute)} is never reached: ${threshold.unreachable}.`
      : `Precision ${threshold.min_precision.toFixed(2)} for ${human(attribute)} `
        + `means score ≥ ${threshold.min_score.toFixed(4)} (its precision curve on the validation split).`;
  }

  function statusOf(body, what) {
    if (body.threshold) return thresholdSummary(body, what);
    return `${body.results.length} results ${what}${timing(body)}.`;
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

  function setStatus(text, truncated = false) {
    statusLine.textContent = text;
    statusLine.classList.toggle("truncated", truncated);
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

  const PREDICTED = "predicted.";

  // Chips of the predicted tags in an item's metadata ("predicted.<attribute>" and its
  // ".confidence"), in the order of the attributes; none when the index has no predictions.
  function renderTags(list, metadata, highlighted) {
    const names = attributes.length ? attributes.map((a) => a.name)
      : Object.keys(metadata).filter((k) => k.startsWith(PREDICTED) && !k.endsWith(".confidence"))
        .map((k) => k.slice(PREDICTED.length));
    const chips = [];
    for (const name of names) {
      const value = metadata[`${PREDICTED}${name}`];
      if (value === undefined || value === null) continue;
      const confidence = metadata[`${PREDICTED}${name}.confidence`];
      const chip = document.createElement("li");
      chip.className = "tag";
      chip.dataset.attribute = name;
      if (highlighted.has(name)) chip.classList.add("match");
      const key = document.createElement("span");
      key.className = "tag-attribute";
      key.textContent = `${human(name)}:`;
      const text = document.createElement("span");
      text.className = "tag-value";
      text.textContent = human(value);
      chip.append(key, " ", text);
      let title = `predicted ${human(name)}: ${value}`;
      if (typeof confidence === "number") {
        const percent = document.createElement("span");
        percent.className = "tag-confidence";
        percent.textContent = `${Math.round(confidence * 100)}%`;
        chip.append(" ", percent);
        title += ` (confidence ${confidence.toFixed(2)})`;
      }
      chip.title = title;
      chips.push(chip);
    }
    list.replaceChildren(...chips);
    list.hidden = chips.length === 0;
  }

  function renderResults(hits, reranked, highlighted = new Set([attributeSelect.value])) {
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
      const scoreLine = card.querySelector(".score");
      scoreLine.textContent = score;
      if (typeof hit.precision === "number") {   // a threshold search under one attribute with a curve
        const precision = document.createElement("span");
        precision.className = "precision";
        precision.textContent = `precision ${hit.precision.toFixed(2)}`;
        precision.title = `estimated precision of every item scoring at least ${formatScore(hit.score)} `
          + `(${hit.precision.toFixed(4)}, the validation split's precision curve)`;
        scoreLine.append(precision);
      }
      renderTags(card.querySelector(".tags"), hit.metadata, highlighted);
      const list = card.querySelector("dl");
      for (const [key, value] of Object.entries(hit.metadata)) {
        if (key.startsWith(PREDICTED)) continue;      // shown as tags
        const pair = document.createElement("div");
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
        if (highlighted.has(key)) pair.className = "match";
        pair.append(dt, dd);
        list.append(pair);
      }
      setUpCardActions(card, hit.id, rank);
      return card;
    });
    resultsList.replaceChildren(...cards);
    resultsList.classList.toggle("tagged", cards.some((card) => !card.querySelector(".tags").hidden));
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
    const { mine, signal } = supersede();
    clearError();
    showPreview(query);
    const data = queryForm(query);
    appendLimit(singleLimit, data);
    resultsSection.setAttribute("aria-busy", "true");
    setStatus(`Searching for ${attributeSelect.value}…`);
    try {
      const body = await timed(api("/search", data, signal));
      if (mine !== generation) return;
      renderResults(body.results, false);
      setStatus(statusOf(body, `for ${body.attribute}`), Boolean(body.truncated));
      showTranslated(singleLimit, body, body.attribute);
      if (focusResults) $("results-heading").focus();
      if (explainToggle.checked) explainAll(mine);
    } catch (err) {
      if (mine !== generation) return;
      resultsList.replaceChildren();
      setStatus("No results.");
      showTranslated(singleLimit, null, "");
      showError(err);
    } finally {
      if (mine === generation) resultsSection.removeAttribute("aria-busy");
    }
  }

  // A threshold follows its slider: the one-attribute query is sent again DEBOUNCE_MS after the last
  // change, and the request in flight is cancelled.
  function scheduleSingle(delay = DEBOUNCE_MS) {
    if (mode !== "single" || !currentQuery()) return;
    supersede();
    resultsSection.setAttribute("aria-busy", "true");
    setStatus("Updating the results…");
    debounce = setTimeout(() => runSearch(), delay);
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
    const { mine, signal } = supersede();
    clearError();
    showPreview(query);
    const data = queryForm(query);
    for (const id of candidates) data.append("candidates", id);
    data.append("weight", weightInput.value || "1");
    resultsSection.setAttribute("aria-busy", "true");
    setStatus(`Reranking ${candidates.length} ids for ${attributeSelect.value}…`);
    try {
      const body = await timed(api("/rerank", data, signal));
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
    setMode("single", { run: false });
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
          // Explaining every result can outrun the server's rate limit: wait as told, then retry.
          if (err.status === 429 && (job.retries || 0) < RATE_RETRIES) {
            job.retries = (job.retries || 0) + 1;
            await sleep(Math.min(Math.max(err.retryAfter, 1), RATE_WAIT_MAX_S) * 1000);
            if (mine !== generation || !explainToggle.checked) return;
            jobs.unshift(job);
            continue;
          }
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

  // -- composed queries --------------------------------------------------------------------
  function option(value, text) {
    const element = document.createElement("option");
    element.value = value;
    element.textContent = text;
    return element;
  }

  function formatWeight(weight) {
    return (Math.round(weight * 10) / 10).toFixed(1);
  }

  function valuesOf(name) {
    const attribute = attributes.find((a) => a.name === name);
    return attribute && attribute.value_search ? attribute.value_search : [];
  }

  function sourceOf(part) {
    const checked = part.radios.find((radio) => radio.checked);
    return checked ? checked.value : "image";
  }

  function weightOf(part) {
    return Math.round(Number(part.weight.value) * 10) / 10;
  }

  // What a part contributes to the query, or null while its source is not set (it is left out).
  function specOf(part) {
    const spec = { attribute: part.attribute.value };
    const source = sourceOf(part);
    if (source === "image") {
      if (!part.file) return null;
      spec.image = part.field;
    } else if (source === "item_id") {
      const id = part.item.value.trim();
      if (!id) return null;
      spec.item_id = id;
    } else {
      if (!part.value.value) return null;
      spec.value = part.value.value;
    }
    spec.weight = weightOf(part);
    return spec;
  }

  function unusedAttribute() {
    const used = new Set(parts.map((part) => part.attribute.value));
    const free = attributes.find((a) => !used.has(a.name));
    return (free || attributes[0]).name;
  }

  // The part an item or a file for `attribute` goes to: the part about that attribute, else the
  // first part whose source is not set yet (it takes the attribute), else none (a new part).
  function partFor(attribute) {
    return parts.find((part) => part.attribute.value === attribute) || parts.find((part) => !specOf(part)) || null;
  }

  function fillValues(part) {
    const values = valuesOf(part.attribute.value);
    const chosen = part.value.value;
    part.value.replaceChildren(option("", "choose a value"), ...values.map((v) => option(v, human(v))));
    part.value.value = values.includes(chosen) ? chosen : "";
    const radio = part.radios.find((r) => r.value === "value");
    const none = values.length === 0;
    radio.disabled = none;
    part.value.disabled = none;
    const why = part.el.querySelector(".no-values");
    why.hidden = !none;
    why.textContent = none ? (attributes.some((a) => valuesOf(a.name).length)
      ? `No value of ${human(part.attribute.value)} can be searched by: the model has no prototype for any.`
      : "Searching by value needs value prototypes, which this model's checkpoint lacks (asen prototypes adds them).")
      : "";
    if (none && radio.checked) setSource(part, "image");
  }

  function setSource(part, source) {
    for (const radio of part.radios) radio.checked = radio.value === source;
    showSource(part);
  }

  function setFile(part, file) {
    if (part.fileUrl) URL.revokeObjectURL(part.fileUrl);
    part.file = file;
    part.fileUrl = file ? URL.createObjectURL(file) : null;
    if (file && !(part.fileInput.files.length && part.fileInput.files[0] === file)) {
      try {
        const transfer = new DataTransfer();   // shows the file's name in the part's file input
        transfer.items.add(file);
        part.fileInput.files = transfer.files;
      } catch (err) {
        // older browsers: the input keeps its old text; the file is used all the same
      }
    }
    setSource(part, "image");
  }

  // Show the chosen source's control, and what the part is taken from (or that it is left out).
  function showSource(part) {
    const source = sourceOf(part);
    for (const box of part.el.querySelectorAll(".source")) box.hidden = box.dataset.source !== source;
    const spec = specOf(part);
    let thumb = null;
    let caption;
    if (source === "image") {
      thumb = part.fileUrl;
      caption = part.file ? `image ${part.file.name || "(unnamed)"}` : "no image chosen yet";
    } else if (source === "item_id") {
      const id = part.item.value.trim();
      thumb = id ? imageUrl(id, PART_THUMB_SIZE) : null;
      caption = id ? `catalogue item ${id}` : "no item chosen yet";
    } else {
      caption = part.value.value ? `the value ${human(part.value.value)}` : "no value chosen yet";
    }
    if (!spec) caption += ": this part is left out";
    part.el.classList.toggle("incomplete", !spec);
    part.caption.textContent = caption;
    if (thumb) {
      if (part.thumb.getAttribute("src") !== thumb) part.thumb.src = thumb;
      part.thumb.hidden = false;
    } else {
      part.thumb.removeAttribute("src");
      part.thumb.hidden = true;
    }
  }

  function renumber() {
    parts.forEach((part, n) => {
      const name = human(part.attribute.value);
      part.title.textContent = `Part ${n + 1}: ${name}`;
      part.remove.setAttribute("aria-label", `Remove part ${n + 1} (${name})`);
    });
  }

  function addPart(init = {}) {
    const key = ++partSerial;
    const el = partTemplate.content.firstElementChild.cloneNode(true);
    for (const control of el.querySelectorAll("[data-id]")) control.id = `part${key}-${control.dataset.id}`;
    for (const label of el.querySelectorAll("label[data-for], output[data-for]")) {
      label.setAttribute("for", `part${key}-${label.dataset.for}`);
    }
    const named = (id) => el.querySelector(`[data-id='${id}']`);
    const part = {
      key,
      el,
      field: `img${key}`,            // the multipart field its uploaded image is sent as
      title: el.querySelector(".part-title"),
      remove: el.querySelector(".remove"),
      attribute: named("attribute"),
      radios: [...el.querySelectorAll("input[type='radio']")],
      fileInput: named("file"),
      item: named("item"),
      value: named("value"),
      weight: named("weight"),
      output: el.querySelector("output"),
      thumb: el.querySelector(".part-thumb"),
      caption: el.querySelector(".part-caption"),
      file: null,
      fileUrl: null,
    };
    el.dataset.part = String(key);
    for (const radio of part.radios) radio.name = `part${key}-source`;
    part.attribute.replaceChildren(...attributes.map((a) => option(a.name, human(a.name))));
    part.attribute.value = init.attribute || unusedAttribute();
    fillValues(part);
    if (init.itemId) part.item.value = init.itemId;
    if (init.value) part.value.value = init.value;
    if (init.weight !== undefined) part.weight.value = String(init.weight);
    part.output.textContent = formatWeight(weightOf(part));
    parts.push(part);
    partsList.append(el);
    if (init.file) setFile(part, init.file);
    else setSource(part, init.source || "image");
    renumber();

    part.attribute.addEventListener("change", () => {
      fillValues(part);
      renumber();
      showSource(part);
      scheduleComposed();
    });
    for (const radio of part.radios) {
      radio.addEventListener("change", () => {
        showSource(part);
        scheduleComposed();
      });
    }
    part.fileInput.addEventListener("change", () => {
      if (!part.fileInput.files.length) return;
      setFile(part, part.fileInput.files[0]);
      scheduleComposed();
    });
    part.item.addEventListener("change", () => {
      showSource(part);
      scheduleComposed();
    });
    part.value.addEventListener("change", () => {
      showSource(part);
      scheduleComposed();
    });
    part.weight.addEventListener("input", () => {
      part.output.textContent = formatWeight(weightOf(part));
      scheduleComposed();
    });
    part.thumb.addEventListener("error", () => {
      part.thumb.hidden = true;
    });
    part.remove.addEventListener("click", () => {
      const at = parts.indexOf(part);
      removePart(part);
      const next = parts[Math.min(at, parts.length - 1)];
      (next ? next.remove : addPartButton).focus();
      scheduleComposed();
    });
    // A file dropped on a part is that part's image (and not the one-attribute query).
    el.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.stopPropagation();
      el.classList.add("dragging");
    });
    for (const type of ["dragleave", "dragend"]) el.addEventListener(type, () => el.classList.remove("dragging"));
    el.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation();
      el.classList.remove("dragging");
      const files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) return;
      setFile(part, files[0]);
      scheduleComposed(0);
    });
    return part;
  }

  function removePart(part) {
    if (part.fileUrl) URL.revokeObjectURL(part.fileUrl);
    parts.splice(parts.indexOf(part), 1);
    part.el.remove();
    renumber();
  }

  // The one-attribute query, if any, becomes the first part when the builder opens empty.
  function seedParts() {
    const query = currentQuery();
    const init = { attribute: attributeSelect.value || undefined };
    if (query && query.kind === "item") Object.assign(init, { source: "item_id", itemId: query.id });
    if (query && query.kind === "image") init.file = query.file;
    addPart(init);
  }

  // The parts sent, in order, and the files they name; parts without a source are left out.
  function composedQuery() {
    const spec = [];
    const files = [];
    for (const part of parts) {
      const one = specOf(part);
      if (!one) continue;
      spec.push(one);
      if (one.image) files.push([part.field, part.file]);
    }
    return { spec, files };
  }

  function describe(spec) {
    return spec.map((p) => `${human(p.attribute)} ${formatWeight(p.weight)}`).join(", ");
  }

  // Results follow the parts: a change waits DEBOUNCE_MS for the next one, and cancels the request
  // in flight, so only the answer to the latest query is ever shown.
  function scheduleComposed(delay = DEBOUNCE_MS) {
    if (mode !== "composed") return;
    composedBound(composedQuery().spec);
    supersede();
    resultsSection.setAttribute("aria-busy", "true");
    setStatus("Updating the results…");
    debounce = setTimeout(() => runComposed(), delay);
  }

  // A composed score lies in [-sum |weight|, sum |weight|]: the range of its score slider.
  function composedBound(spec) {
    const bound = spec.length ? spec.reduce((sum, part) => sum + Math.abs(part.weight), 0) : 1;
    setBound(composedLimit, bound);
    const edge = String(Math.round(bound * 100) / 100);
    composedLimit.scale.hidden = false;
    composedLimit.scale.textContent = `This query's scores lie between -${edge} and ${edge}: the sum of its parts' `
      + "similarities (-1 to 1 each) times their weights.";
  }

  async function runComposed({ focusResults = false } = {}) {
    const { mine, signal } = supersede();
    const { spec, files } = composedQuery();
    composedBound(spec);
    clearError();
    if (!spec.length) {
      resultsList.replaceChildren();
      resultsSection.removeAttribute("aria-busy");
      setStatus(parts.length ? "Give a part an image, a catalogue item or a value to search."
        : "Add an attribute to build a query.");
      return;
    }
    const data = new FormData();
    data.append("query", JSON.stringify(spec));
    for (const [field, file] of files) data.append(field, file, file.name || field);
    appendLimit(composedLimit, data);
    resultsSection.setAttribute("aria-busy", "true");
    setStatus(`Searching for ${describe(spec)}…`);
    try {
      const body = await timed(api("/search", data, signal));
      if (mine !== generation) return;
      renderResults(body.results, false, new Set(spec.filter((p) => p.weight !== 0).map((p) => p.attribute)));
      setStatus(statusOf(body, `for the composed query (${describe(spec)})`), Boolean(body.truncated));
      if (focusResults) $("results-heading").focus();
    } catch (err) {
      if (mine !== generation) return;
      resultsList.replaceChildren();
      setStatus("No results.");
      showError(err);
    } finally {
      if (mine === generation) resultsSection.removeAttribute("aria-busy");
    }
  }

  function setMode(next, { run = true } = {}) {
    for (const radio of modeRadios) radio.checked = radio.value === next;
    if (next === mode) return;
    mode = next;
    singleMode.hidden = next !== "single";
    composedForm.hidden = next !== "composed";
    closeMenu();
    if (next === "composed") {
      clearAllOverlays();
      if (!parts.length) seedParts();
    }
    if (!run) return;
    if (next === "composed") {
      runComposed();
    } else if (currentQuery()) {
      runSearch();
    } else {
      supersede();
      resultsList.replaceChildren();
      resultsSection.removeAttribute("aria-busy");
      clearError();
      setStatus("Choose an image or a catalogue item to search.");
    }
  }

  // -- result card actions: "Use for…" and "Same, but not this colour" ---------------------------
  let openMenu = null;            // {button, menu} of the "Use for…" menu shown, if any

  function colourAttribute() {
    const named = attributes.find((a) => COLOUR_NAMES.includes(a.name.toLowerCase()));
    return named ? named.name : attributes[attributes.length - 1].name;
  }

  // The attribute searched now (the one-attribute query's, or the first part liked), unless that is
  // the colour attribute: then the first other attribute.
  function searchedAttribute(colour) {
    let searched = null;
    if (mode === "single") {
      searched = attributeSelect.value;
    } else {
      const liked = parts.find((part) => specOf(part) && weightOf(part) > 0 && part.attribute.value !== colour);
      searched = liked ? liked.attribute.value : null;
    }
    if (!searched || searched === colour) searched = attributes.map((a) => a.name).find((n) => n !== colour);
    return searched;
  }

  function useItemFor(id, attribute) {
    setMode("composed", { run: false });
    let part = partFor(attribute);
    if (part) {
      part.attribute.value = attribute;
      fillValues(part);
      renumber();
    } else {
      part = addPart({ attribute });
    }
    part.item.value = id;
    setSource(part, "item_id");
    part.item.focus();
    runComposed();
  }

  function sameButNot(id) {
    const colour = colourAttribute();
    const searched = searchedAttribute(colour);
    setMode("composed", { run: false });
    while (parts.length) removePart(parts[parts.length - 1]);
    addPart({ attribute: searched, source: "item_id", itemId: id, weight: 1 });
    addPart({ attribute: colour, source: "item_id", itemId: id, weight: -1 });
    runComposed({ focusResults: true });
  }

  function closeMenu({ focus = false } = {}) {
    if (!openMenu) return;
    const { button, menu } = openMenu;
    openMenu = null;
    menu.hidden = true;
    menu.replaceChildren();
    button.setAttribute("aria-expanded", "false");
    if (focus) button.focus();
  }

  // Which part an item chosen for `attribute` goes to, as the menu says it: the builder opens with
  // the one-attribute query as its part 1 (an empty part when there is none).
  function partLabel(attribute) {
    if (!parts.length) return attribute === attributeSelect.value || !currentQuery() ? "part 1" : "new part";
    const part = partFor(attribute);
    return part ? `part ${parts.indexOf(part) + 1}` : "new part";
  }

  function openUseMenu(button, menu, id) {
    closeMenu();
    const items = attributes.map((a) => {
      const item = document.createElement("button");
      item.type = "button";
      item.setAttribute("role", "menuitem");
      item.tabIndex = -1;
      item.dataset.attribute = a.name;
      item.textContent = `${human(a.name)}: ${partLabel(a.name)}`;
      item.addEventListener("click", () => {
        closeMenu();
        useItemFor(id, a.name);
      });
      return item;
    });
    const caption = document.createElement("p");
    caption.className = "use-caption";
    caption.setAttribute("aria-hidden", "true");
    caption.textContent = `Use ${id} for the attribute:`;
    menu.setAttribute("aria-label", `Use ${id} for the attribute`);
    menu.replaceChildren(caption, ...items);
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    openMenu = { button, menu };
    items[0].focus();
  }

  function menuKeys(event) {
    if (!openMenu) return;
    const items = [...openMenu.menu.querySelectorAll("[role='menuitem']")];
    const at = items.indexOf(document.activeElement);
    const go = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[event.key];
    if (go !== undefined) {
      event.preventDefault();
      items[(go + items.length) % items.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeMenu({ focus: true });
    } else if (event.key === "Tab") {
      closeMenu({ focus: true });
    }
  }

  function setUpCardActions(card, id, rank) {
    const idLabel = card.querySelector(".id");
    idLabel.id = `result-${rank}-id`;
    const use = card.querySelector(".use-button");
    const menu = card.querySelector(".use-menu");
    menu.id = `result-${rank}-use`;
    use.setAttribute("aria-controls", menu.id);
    use.setAttribute("aria-describedby", idLabel.id);
    use.title = `Use ${id} as the catalogue item of a part of a composed query`;
    use.addEventListener("click", () => {
      if (openMenu && openMenu.menu === menu) closeMenu();
      else openUseMenu(use, menu, id);
    });
    menu.addEventListener("keydown", menuKeys);
    const notThis = card.querySelector(".not-this");
    if (attributes.length < 2) {
      notThis.hidden = true;
      return;
    }
    const colour = colourAttribute();
    notThis.textContent = `Same, but not this ${human(colour)}`;
    notThis.setAttribute("aria-describedby", idLabel.id);
    notThis.title = `Items like ${id} in the attribute searched, and unlike it in ${human(colour)}`;
    notThis.addEventListener("click", () => sameButNot(id));
  }

  document.addEventListener("click", (event) => {
    if (openMenu && !openMenu.menu.contains(event.target) && !openMenu.button.contains(event.target)) closeMenu();
  });

  addPartButton.addEventListener("click", () => {
    const part = addPart();
    part.attribute.focus();
    scheduleComposed();
  });
  composedTopK.addEventListener("input", () => scheduleComposed());
  // A change of the kind of limit is sent at once; a slider or "At most" once it rests.
  function wireLimit(limit, schedule) {
    for (const radio of [...limit.kinds, ...limit.bys]) {
      radio.addEventListener("change", () => {
        showLimit(limit);
        schedule(0);
      });
    }
    for (const slider of [limit.score, limit.precision]) {
      slider.addEventListener("input", () => {
        showLimit(limit);
        schedule(DEBOUNCE_MS);
      });
    }
    limit.maxResults.addEventListener("input", () => schedule(DEBOUNCE_MS));
  }
  wireLimit(singleLimit, scheduleSingle);
  wireLimit(composedLimit, scheduleComposed);
  composedForm.addEventListener("submit", (event) => {
    event.preventDefault();
    parts.forEach(showSource);
    runComposed();
  });
  // Enter in a text or number field sends the query at once (the form has no submit button).
  composedForm.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input[type='text'], input[type='number']")) {
      event.preventDefault();
      parts.forEach(showSource);
      runComposed();
    }
  });
  for (const radio of modeRadios) radio.addEventListener("change", () => radio.checked && setMode(radio.value));

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
    if (mode === "composed") {     // dropped beside the parts: the image of a part not set yet, or a new one
      const part = parts.find((p) => !specOf(p)) || addPart();
      setFile(part, files[0]);
      scheduleComposed(0);
      return;
    }
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
    offerSinglePrecision();
    if (currentQuery()) runSearch();
  });
  explainToggle.addEventListener("change", () => {
    if (explainToggle.checked) {
      if (resultsList.children.length) explainAll(generation);
    } else {
      clearAllOverlays();
    }
  });

  // By precision under the attribute chosen, when GET /attributes lists its scores for 0.9/0.95/0.99.
  function offerSinglePrecision() {
    const name = attributeSelect.value;
    const attribute = attributes.find((a) => a.name === name);
    const scores = attribute ? attribute.precision_scores : null;
    let why = null;
    if (!scores) {
      why = attributes.some((a) => a.precision_scores)
        ? `The model has no precision curve for ${human(name)}: set a minimum score.`
        : "A threshold by precision needs precision curves, which this model lacks (asen eval writes them beside "
          + "the checkpoint): set a minimum score.";
    }
    offerPrecision(singleLimit, why);
    singleLimit.scale.hidden = !scores;
    singleLimit.scale.textContent = scores ? `Precision of ${human(name)} on the validation split: `
      + Object.entries(scores).map(([level, score]) => (score === null ? `${level} never reached`
        : `${level} from score ${score.toFixed(2)}`)).join(", ") + "." : "";
  }

  // -- start -------------------------------------------------------------------------------
  async function loadAttributes() {
    try {
      const body = await api("/attributes");
      attributes = body.attributes;
      const options = body.attributes.map((attribute) => {
        const option = document.createElement("option");
        option.value = attribute.name;
        option.textContent = attribute.name.replace(/_/g, " ");
        option.title = attribute.values.join(", ");
        return option;
      });
      attributeSelect.replaceChildren(...options);
      offerSinglePrecision();
      offerPrecision(composedLimit, "Precision is calibrated per attribute: a composed query is cut at a minimum score.");
      composedBound([]);
      document.body.dataset.ready = "true";
    } catch (err) {
      showError(err);
    }
  }

  loadAttributes();
})();
