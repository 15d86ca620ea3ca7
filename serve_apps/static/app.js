// flux-serve studio: the public HTTP API from a browser, nothing else (no CDN, no other host).
"use strict";

const KEY_STORAGE = "flux-serve.api-key";
const POLL_INTERVAL_MS = 500;
const HISTORY_PAGE = 10;
const FINAL = new Set(["Ready", "Error", "Cancelled", "Request Moderated", "Content Moderated"]);
// The server's default inputs.max_references; where it is set lower, the submit says so in its own words.
const MAX_REFERENCES = 4;
const REFERENCE_FIELDS = ["input_image", "input_image_2", "input_image_3", "input_image_4"];

const $ = (id) => document.getElementById(id);
// references: the form's reference images, in order, each {name, src, id, ready, owned, used}: `ready` resolves
// to its upload id (null if the upload failed). jobReferences: job id -> the [{name, src, id}] it was sent with.
const state = { models: [], running: new Map(), historyCursor: null, references: [], jobReferences: new Map(),
  trainFiles: [], finetunePolls: new Set() };

// ---- the API, and its errors in its own words -------------------------------------------

class ApiError extends Error {}

function apiMessage(status, body) {
  const detail = body && (body.detail ?? (body.error && body.error.message));
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((problem) => {
      const where = (problem.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${problem.msg}` : problem.msg;
    }).join("\n");
  }
  return `The server answered ${status}.`;
}

async function api(path, options = {}) {
  const json = options.body && !(options.body instanceof FormData);  // a FormData sets its own multipart type
  const headers = { "x-key": $("api-key").value.trim(), ...(json ? { "Content-Type": "application/json" } : {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new ApiError(`The service cannot be reached (${error.message}).`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(apiMessage(response.status, body));
  return body;
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

async function attempt(action) {
  try {
    await action();
    return true;
  } catch (error) {
    showMessage(error instanceof ApiError ? error.message : String(error));
    return false;
  }
}

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
};

// ---- models, LoRAs, usage ----------------------------------------------------------------

async function loadModels() {
  state.models = (await api("/v1/models")).filter((model) => model.served !== false); // the rest are known specs not deployed here
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...state.models.map((model) => el("option", { value: model.id, textContent: model.id })));
  if (state.models.some((model) => model.id === chosen)) select.value = chosen;
  describeModel();
}

function describeModel() {
  const model = state.models.find((candidate) => candidate.id === $("model").value);
  if (!model) return;
  const weights = model.emulated ? `${model.weights} (no real checkpoint)` : model.weights;
  $("model-info").textContent = `${model.description.replace(/\.?$/, ".")} Weights: ${weights}. ` +
    `License: ${model.license}${model.commercial_use ? "" : " (non-commercial)"}.`;
  $("steps").placeholder = model.defaults.steps ?? "";
  $("width").placeholder = model.defaults.width ?? "";
  $("height").placeholder = model.defaults.height ?? "";
}

async function loadLoras() {
  const loras = await api("/v1/loras");
  const box = $("loras");
  // a reload (a finetune just Ready, a delete) keeps what is ticked and its scale
  const kept = new Map([...box.querySelectorAll(".lora")]
    .filter((row) => row.querySelector("input[type=checkbox]").checked)
    .map((row) => [row.querySelector("input[type=checkbox]").value, row.querySelector(".scale").value]));
  box.querySelectorAll(".lora").forEach((row) => row.remove());
  $("loras-empty").hidden = loras.length > 0;
  for (const lora of loras) {
    const id = `lora-${lora.id}`;
    const details = [lora.trigger_word && `trigger "${lora.trigger_word}"`, lora.license, `fits ${lora.fits.join(", ") || "no served model"}`];
    box.append(el("div", { className: "lora" },
      el("input", { type: "checkbox", id, value: lora.id }),
      el("label", { htmlFor: id, textContent: `${lora.id} (${details.filter(Boolean).join("; ")})` }),
      el("input", { type: "number", min: "-2", max: "2", step: "0.05", value: "1", ariaLabel: `Scale of ${lora.id}`, className: "scale" })));
    if (kept.has(lora.id)) {
      $(id).checked = true;
      $(id).parentElement.querySelector(".scale").value = kept.get(lora.id);
    }
  }
}

async function loadUsage() {
  const usage = await api("/v1/usage");
  const total = usage.total;
  $("usage-text").textContent = `${total.jobs} jobs, ${total.images} images, ${total.gpu_seconds.toFixed(2)} GPU-seconds, ` +
    `${dollars(total.cost_usd)} at $${usage.usd_per_gpu_hour}/h (${usage.gpu_type}).`;
}

// ---- reference images: each uploaded once (POST /v1/uploads), its id sent as input_image.. ---------

async function uploadImage(file) {
  const form = new FormData();
  form.append("file", file, file.name || "image.png");
  return (await api("/v1/uploads", { method: "POST", body: form })).id;
}

function referenceEntry(name, src, owned, upload) {
  const entry = { name, src, id: null, owned, used: false };
  entry.ready = upload().then(
    (id) => { entry.id = id; renderReferences(); return id; },
    (error) => { removeReference(entry); showMessage(`${name}: ${error.message}`); return null; });
  return entry;
}

function addReferences(files) {
  showMessage("");
  const room = Math.max(MAX_REFERENCES - state.references.length, 0);
  const chosen = [...files].slice(0, room);
  if (files.length > chosen.length) {
    showMessage(`At most ${MAX_REFERENCES} reference images: ${files.length - chosen.length} not added (remove one first).`);
  }
  state.references.push(...chosen.map((file) => referenceEntry(file.name, URL.createObjectURL(file), true, () => uploadImage(file))));
  renderReferences();
}

function dropReference(entry) {
  if (entry.owned && !entry.used) URL.revokeObjectURL(entry.src);
}

function removeReference(entry) {
  const index = state.references.indexOf(entry);
  if (index < 0) return;
  state.references.splice(index, 1);
  dropReference(entry);
  renderReferences();
}

function setReferences(entries) {
  state.references.forEach(dropReference);
  state.references = entries;
  renderReferences();
}

function renderReferences() {
  $("reference-list").replaceChildren(...state.references.map((entry, index) => {
    const remove = el("button", { type: "button", className: "remove", textContent: "\u00d7",
      ariaLabel: `Remove reference ${index + 1}`, title: `Remove ${entry.name}` });
    remove.addEventListener("click", () => removeReference(entry));
    const item = el("li", { className: entry.id ? "" : "uploading" },
      el("img", { src: entry.src, alt: `Reference ${index + 1}: ${entry.name}` }), remove);
    if (entry.id) item.dataset.uploadId = entry.id;
    return item;
  }));
  $("reference-files").disabled = state.references.length >= MAX_REFERENCES;
  // Without a size or an aspect ratio the server gives the output the first reference's shape.
  $("aspect-default").textContent = state.references.length ? "as reference 1" : "model default";
}

/** The upload ids of the form's references, once every upload has ended; null if one failed (its message is shown). */
async function referenceIds() {
  const ids = await Promise.all(state.references.map((entry) => entry.ready));
  return ids.every(Boolean) ? ids : null;
}

/** "Use these settings again": the job's references, by the ids this page sent, else uploaded again from the job's record. */
function restoreReferences(job) {
  const known = state.jobReferences.get(job.id);
  if (known) {
    setReferences(known.map((sent) => referenceEntry(sent.name, sent.src, false, async () => sent.id)));
    return;
  }
  const entries = (job.references || []).map((url, index) => {
    const name = `reference ${index + 1} of job ${job.id.slice(0, 8)}`;
    return referenceEntry(name, url, false, async () => {
      let response;
      try {
        response = await fetch(url);
      } catch (error) {
        throw new ApiError(`cannot be read (${error.message}).`);
      }
      if (!response.ok) throw new ApiError(apiMessage(response.status, await response.json().catch(() => null)));
      return uploadImage(new File([await response.blob()], `reference-${index + 1}.png`, { type: "image/png" }));
    });
  });
  setReferences(entries);
  Promise.all(entries.map((entry) => entry.ready)).then((ids) => {
    if (entries.length && ids.every(Boolean)) state.jobReferences.set(job.id, entries.map(({ name, src, id }) => ({ name, src, id })));
  });
}

const referenceCount = (job) => (job.references || []).length;
const referencesText = (job) => (referenceCount(job) === 1 ? "1 reference" : `${referenceCount(job)} references`);

// ---- the form ----------------------------------------------------------------------------

const dollars = (usd) => `$${usd >= 0.01 || usd === 0 ? usd.toFixed(2) : usd.toPrecision(2)}`;

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

function readForm() {
  const body = { prompt: $("prompt").value, num_images: numberOrNull("num-images") ?? 1 };
  for (const [field, id] of [["steps", "steps"], ["seed", "seed"], ["width", "width"], ["height", "height"]]) {
    const value = numberOrNull(id);
    if (value !== null) body[field] = value;
  }
  if ($("aspect-ratio").value && body.width === undefined && body.height === undefined) body.aspect_ratio = $("aspect-ratio").value;
  const loras = [...document.querySelectorAll(".lora")]
    .filter((row) => row.querySelector("input[type=checkbox]").checked)
    .map((row) => ({ id: row.querySelector("input[type=checkbox]").value, scale: Number(row.querySelector(".scale").value) }));
  if (loras.length) body.loras = loras;
  return body;
}

function fillForm(job, newSeed) {
  const request = job.request;
  $("prompt").value = request.prompt;
  if (state.models.some((model) => model.id === job.model)) $("model").value = job.model;
  describeModel();
  $("aspect-ratio").value = "";
  $("width").value = request.width ?? "";
  $("height").value = request.height ?? "";
  $("steps").value = request.steps ?? "";
  $("seed").value = newSeed ? "" : (job.seed ?? request.seed ?? "");
  $("num-images").value = request.num_images ?? 1;
  const chosen = new Map((request.loras || []).map((lora) => [lora.id, lora.scale]));
  document.querySelectorAll(".lora").forEach((row) => {
    const box = row.querySelector("input[type=checkbox]");
    box.checked = chosen.has(box.value);
    if (box.checked) row.querySelector(".scale").value = chosen.get(box.value);
  });
  restoreReferences(job);
}

async function generate(event) {
  event?.preventDefault();
  showMessage("");
  if (!$("model").value && !(await attempt(loadModels))) return;
  const model = $("model").value;
  if (!model) return showMessage("This server serves no model: check serve_config.yaml.");
  await attempt(async () => {
    const pressed = performance.now();
    const references = [...state.references];
    const ids = await referenceIds();  // waits for uploads still under way
    if (ids === null) return;
    const body = readForm();
    ids.forEach((id, index) => { body[REFERENCE_FIELDS[index]] = id; });
    const submitted = await api(`/v1/${encodeURIComponent(model)}`, { method: "POST", body: JSON.stringify(body) });
    if (references.length) {
      references.forEach((entry) => { entry.used = true; });
      state.jobReferences.set(submitted.id, references.map(({ name, src, id }) => ({ name, src, id })));
    }
    follow(submitted.id, pressed);
    showEta(submitted.id, submitted.eta_s);
  });
}

async function cancelRunning() {
  await attempt(async () => {
    for (const jobId of [...state.running.keys()]) await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
  });
}

// ---- one job's card: live events, or polling where the stream is unavailable ---------------

function jobCard(jobId) {
  $("results-empty").hidden = true;
  const card = el("article", { className: "job", id: `job-${jobId}` },
    el("p", { className: "prompt", textContent: $("prompt").value }),
    el("progress", { max: 1, value: 0 }),
    el("p", { className: "status", textContent: "Submitted" }),
    el("div", { className: "gallery" }),
    el("div", { className: "actions" }));
  card.dataset.jobId = jobId;
  $("results").querySelector("h2").after(card);
  return card;
}

// Times (performance.now) on the card's data-* attributes, read by the tests and bench/page_latency.py.
function markFirstEvent(card) {
  card.dataset.firstEventAt ||= String(performance.now());
}

function showQueued(card, position) {
  markFirstEvent(card);
  card.querySelector(".status").textContent = position === 0 ? "Queued: next" : `Queued: ${position} ahead`;
}

function showProgress(card, step, total, preview) {
  markFirstEvent(card);
  const bar = card.querySelector("progress");
  bar.max = total;
  bar.value = step;
  card.querySelector(".status").textContent = `Step ${step} of ${total}`;
  card.dataset.progressSeen ||= String(performance.now());
  showPreview(card, preview);
}

// The image as it forms: the progress's preview (a data: URL of a few KB), until the finished images replace it.
function showPreview(card, preview) {
  if (!preview || typeof preview.image !== "string" || !preview.image.startsWith("data:image/")) return;
  let img = card.querySelector("img.forming");
  if (!img) {
    img = el("img", { className: "forming", alt: "The image as it forms" });
    card.querySelector(".gallery").replaceChildren(el("figure", {}, img));
  }
  img.src = preview.image;
  img.title = `Step ${preview.step}`;
  card.dataset.previewSeen ||= String(performance.now());
}

// "about N s" under a queued job's status, from its submit's eta_s, counting down until its steps show.
function showEta(jobId, etaS) {
  const card = $(`job-${jobId}`);
  if (!card || etaS === null || etaS === undefined) return;
  card.dataset.etaS = String(Math.round(etaS));
  const line = el("p", { className: "eta" });
  card.querySelector(".status").after(line);
  const readyAt = performance.now() + etaS * 1000;
  const tick = () => {
    if (card.dataset.progressSeen || card.dataset.finishedAt) {
      clearInterval(timer);
      line.remove();
      return;
    }
    line.textContent = `about ${Math.max(1, Math.round((readyAt - performance.now()) / 1000))} s`;
  };
  const timer = setInterval(tick, 1000);
  tick();
}

function follow(jobId, pressedAt) {
  const card = jobCard(jobId);
  card.dataset.pressedAt = String(pressedAt);
  card.dataset.submittedAt = String(performance.now());
  state.running.set(jobId, card);
  $("cancel-button").disabled = false;
  api(`/v1/jobs/${jobId}/events-token`, { method: "POST" })
    .then((token) => listen(card, jobId, token.events_url))
    .catch(() => poll(card, jobId));
}

function listen(card, jobId, url) {
  const source = new EventSource(url);
  const data = (event) => JSON.parse(event.data);
  source.addEventListener("queued", (event) => showQueued(card, data(event).queue_position));
  source.addEventListener("progress", (event) => {
    const progress = data(event);
    showProgress(card, progress.step, progress.total, progress.preview);
  });
  source.addEventListener("done", (event) => { source.close(); finish(card, data(event)); });
  source.addEventListener("error", (event) => {
    if (event.data !== undefined) { source.close(); finish(card, data(event)); return; }
    // A dropped connection: the browser reconnects with Last-Event-ID; a refused one ends here.
    if (source.readyState === EventSource.CLOSED) poll(card, jobId);
  });
}

async function poll(card, jobId) {
  while (true) {
    let job;
    try {
      job = await api(`/v1/jobs/${jobId}`);
    } catch (error) {
      card.querySelector(".status").textContent = error.message;
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS * 4));
      continue;
    }
    if (FINAL.has(job.status)) return finish(card, job);
    if (job.queue_position !== null && job.queue_position !== undefined) showQueued(card, job.queue_position);
    else if (job.progress) showProgress(card, job.progress.step, job.progress.total, job.preview);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

async function finish(card, job) {
  card.dataset.finishedAt = String(performance.now());
  state.running.delete(job.id);
  $("cancel-button").disabled = state.running.size === 0;
  card.querySelector(".prompt").textContent = job.request.prompt;
  const status = card.querySelector(".status");
  const bar = card.querySelector("progress");
  if (job.status === "Ready") {
    bar.max = 1;
    bar.value = 1;
    const size = `${job.request.width}x${job.request.height}`;
    status.textContent = `Ready in ${(job.timings_s.total ?? 0).toFixed(2)} s: ${job.model}, ${size}, ` +
      `${job.request.steps} steps, seed ${job.seed}` + (referenceCount(job) ? `, ${referencesText(job)}` : "") + (job.usage ? `, ${dollars(job.usage.cost_usd)}` : "");
    await showImages(card, job);
  } else {
    bar.remove();
    card.querySelector(".gallery").replaceChildren();  // no half-formed picture of a job that ended without one
    status.classList.add("failed");
    status.textContent = `${job.status}: ${job.error || "no reason given"}`;
  }
  card.querySelector(".actions").replaceChildren(...settingsButtons(job));
  addRerun(card, job);
  // After the images: the history's thumbnails would compete with them for the connection.
  attempt(loadUsage);
  attempt(refreshHistory);
}

async function showImages(card, job) {
  const format = job.request.output_format || "jpeg";
  const images = job.images.map((url, index) =>
    el("img", { src: url, alt: `${job.request.prompt} (image ${index + 1}, seed ${job.seed + index})` }));
  await Promise.all(images.map((img) => img.decode().catch(() => null)));  // the preview stays until they are
  card.querySelector(".gallery").replaceChildren(...images.map((img, index) => el("figure", {}, img,
    el("figcaption", {}, el("a", { href: img.src, download: `flux-${job.id.slice(0, 8)}-${index + 1}.${format}`, textContent: "Download" })))));
  card.dataset.imagesShown = String(performance.now());
}

function settingsButtons(job) {
  const again = el("button", { type: "button", className: "small", textContent: "Use these settings again" });
  again.addEventListener("click", () => { fillForm(job, false); $("prompt").focus(); });
  const reseed = el("button", { type: "button", className: "small", textContent: "Same settings, new seed" });
  reseed.addEventListener("click", () => { fillForm(job, true); generate(); });
  return [again, reseed];
}

// ---- reruns: a Ready job made again, and whether its images came out the same ------------------

function addRerun(card, job) {
  if (job.rerun) card.querySelector(".status").after(el("p", { className: "status rerun", textContent: rerunVerdict(job) }));
  if (job.status !== "Ready") return;
  const button = el("button", { type: "button", className: "small", textContent: "Rerun",
    title: "Make these images again from the recorded request and compare them" });
  button.addEventListener("click", () => attempt(async () => {
    const submitted = await api(`/v1/jobs/${job.id}/rerun`, { method: "POST" });
    follow(submitted.id, performance.now());
    $(`job-${submitted.id}`).querySelector(".prompt").textContent = job.request.prompt;
  }));
  card.querySelector(".actions").append(button);
}

function rerunVerdict(job) {
  const rerun = job.rerun;
  const of = `Rerun of ${job.rerun_of.slice(0, 8)}`;
  if (rerun.identical) return `${of}: identical, byte for byte`;
  if (rerun.identical === null) return `${of}: not compared (${rerun.note || "no verdict"})`;
  const note = rerun.note ? ` (${rerun.note})` : "";
  return `${of}: different, largest pixel difference ${rerun.max_pixel_difference ?? "unknown"} of 255${note}`;
}

// ---- history -----------------------------------------------------------------------------

function historyItem(job) {
  const thumb = job.images.length ? el("img", { className: "thumb", src: job.images[0], alt: "" }) : el("div", { className: "thumb" });
  const when = new Date(job.created_at * 1000).toLocaleString();
  const item = el("li", { id: `history-${job.id}` }, thumb, el("div", {},
    el("p", { textContent: job.request.prompt }),
    el("p", { className: "hint", textContent: `${job.status} · ${job.model} · ${job.request.width}x${job.request.height} · ` +
      `${job.images.length || job.request.num_images} image(s) · ` + (referenceCount(job) ? `${referencesText(job)} · ` : "") +
      `seed ${job.seed} · ${when}` }),
    el("div", { className: "actions" }, ...settingsButtons(job))));
  return item;
}

async function loadHistory(cursor) {
  const page = await api(`/v1/jobs?limit=${HISTORY_PAGE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
  if (!cursor) $("history-list").replaceChildren();
  $("history-list").append(...page.jobs.map(historyItem));
  state.historyCursor = page.next_cursor;
  $("history-more").hidden = !page.next_cursor;
}

const refreshHistory = () => loadHistory(null);

// ---- fine-tuning: train on photos (POST /v1/finetune, multipart), follow it, generate with it -------

const MAX_TRAIN_FILES = 50;
const FINETUNE_POLL_MS = 1000;
const SAMPLES_SHOWN = 4;

function addTrainFiles(files) {
  const images = [...files].filter((file) => !file.type || file.type.startsWith("image/"));
  const room = MAX_TRAIN_FILES - state.trainFiles.length;
  if (images.length > room) showMessage(`Up to ${MAX_TRAIN_FILES} photos: ${images.length - Math.max(room, 0)} left out.`);
  images.slice(0, Math.max(room, 0)).forEach((file) => state.trainFiles.push({ file, src: URL.createObjectURL(file) }));
  renderTrainFiles();
}

function removeTrainFile(entry) {
  URL.revokeObjectURL(entry.src);
  state.trainFiles = state.trainFiles.filter((other) => other !== entry);
  renderTrainFiles();
}

function renderTrainFiles() {
  const count = state.trainFiles.length;
  $("train-count").textContent = count ? `${count} photo${count === 1 ? "" : "s"} of ${MAX_TRAIN_FILES}.` : "No photos yet.";
  $("train-files").disabled = count >= MAX_TRAIN_FILES;
  $("train-list").replaceChildren(...state.trainFiles.map((entry, index) => {
    const remove = el("button", { type: "button", className: "remove", textContent: "×", ariaLabel: `Remove photo ${index + 1}` });
    remove.addEventListener("click", () => removeTrainFile(entry));
    return el("li", {}, el("img", { src: entry.src, alt: `Photo ${index + 1}: ${entry.file.name}` }), remove);
  }));
}

function describeTrainModel() {
  $("train-model").textContent = $("model").value ? `Trained for ${$("model").value} (the model chosen above).` : "";
}

async function train(event) {
  event.preventDefault();
  showMessage("");
  if (!state.trainFiles.length) return showMessage(`Add 1 to ${MAX_TRAIN_FILES} photos to train on.`);
  const form = new FormData();
  form.append("finetune_comment", $("train-name").value.trim() || $("train-trigger").value.trim() || "finetune");
  form.append("mode", $("train-mode").value);
  form.append("trigger_word", $("train-trigger").value.trim() || "TOK");
  if ($("train-iterations").value.trim()) form.append("iterations", $("train-iterations").value.trim());
  if ($("model").value) form.append("model", $("model").value);
  state.trainFiles.forEach(({ file }) => form.append("files", file, file.name || "image.png"));
  $("train-button").disabled = true;
  try {
    await attempt(async () => {
      const { finetune_id: id } = await api("/v1/finetune", { method: "POST", body: form });
      state.trainFiles.forEach((entry) => URL.revokeObjectURL(entry.src));
      state.trainFiles = [];
      renderTrainFiles();
      followFinetune(id);
    });
  } finally {
    $("train-button").disabled = false;
  }
}

async function loadFinetunes() {
  const { finetunes } = await api("/v1/my_finetunes");
  const list = await Promise.all(finetunes.map((id) => api(`/v1/finetune_details?finetune_id=${encodeURIComponent(id)}`)));
  $("finetune-list").replaceChildren();
  list.sort((a, b) => a.created_at - b.created_at).forEach(renderFinetune);
  list.filter((details) => !FINAL.has(details.status)).forEach((details) => followFinetune(details.finetune_id));
  $("finetunes-empty").hidden = list.length > 0;
}

function finetuneStatus(details) {
  if (details.status === "Error" || details.status === "Cancelled") return `${details.status}: ${details.error || "it stopped."}`;
  if (details.status === "Ready") {
    return `Ready: use "${details.trigger_word}" in a prompt` +
      (details.default_strength != null ? `, strength ${details.default_strength}.` : ".");
  }
  const progress = details.progress;
  if (!progress || !progress.total) return "Queued for training…";
  const eta = progress.eta_s != null ? `, about ${Math.max(0, Math.round(progress.eta_s))} s left` : "";
  return `Training: step ${progress.step} of ${progress.total}${eta}.`;
}

function renderFinetune(details) {
  const id = details.finetune_id;
  const itemId = `finetune-${id}`;
  let item = $(itemId);
  if (!item) {
    item = el("li", { id: itemId, className: "finetune" });
    item.dataset.finetuneId = id;
    $("finetune-list").prepend(item);
    $("finetunes-empty").hidden = true;
  }
  item.dataset.status = details.status;
  const failed = details.status === "Error" || details.status === "Cancelled";
  const status = el("p", { className: `status${failed ? " failed" : ""}`, textContent: finetuneStatus(details) });
  status.setAttribute("aria-live", "polite");
  const progress = details.progress && details.status === "Pending"
    ? el("progress", { max: details.progress.total || 1, value: details.progress.step || 0, ariaLabel: `Training progress of ${details.finetune_comment}` })
    : null;
  const samples = (details.samples || []).slice(-SAMPLES_SHOWN);
  const gallery = samples.length ? el("div", { className: "gallery" }, ...samples.map((src, index) =>
    el("figure", {}, el("img", { src, alt: `Sample ${details.samples.length - samples.length + index + 1} of ${details.finetune_comment}` })))) : null;
  const actions = el("div", { className: "actions" });
  if (details.status === "Ready") {
    const use = el("button", { type: "button", className: "small", textContent: "Generate with it" });
    use.addEventListener("click", () => attempt(() => generateWithFinetune(details)));
    actions.append(use);
  }
  const remove = el("button", { type: "button", className: "small", textContent: "Delete", ariaLabel: `Delete ${details.finetune_comment}` });
  remove.addEventListener("click", () => attempt(async () => {
    remove.disabled = true;
    try {
      await api("/v1/delete_finetune", { method: "POST", body: JSON.stringify({ finetune_id: id }) });
    } finally {
      remove.disabled = false;
    }
    item.remove();
    $("finetunes-empty").hidden = $("finetune-list").children.length > 0;
    await loadLoras();
  }));
  actions.append(remove);
  item.replaceChildren(
    el("p", { className: "name" }, el("strong", { textContent: details.finetune_comment }),
      ` (${details.mode}, ${details.images} photo${details.images === 1 ? "" : "s"}, ${details.model})`),
    ...[status, progress, gallery, actions].filter(Boolean));
}

async function followFinetune(id) {
  if (state.finetunePolls.has(id)) return;
  state.finetunePolls.add(id);
  const key = $("api-key").value.trim();
  try {
    while (key === $("api-key").value.trim()) {
      const details = await api(`/v1/finetune_details?finetune_id=${encodeURIComponent(id)}`);
      renderFinetune(details);
      if (FINAL.has(details.status)) {
        if (details.status === "Ready") await attempt(loadLoras);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, FINETUNE_POLL_MS));
    }
  } catch (error) {
    showMessage(error instanceof ApiError ? error.message : String(error));
  } finally {
    state.finetunePolls.delete(id);
  }
}

async function generateWithFinetune(details) {
  showMessage("");
  await loadLoras();
  const box = $(`lora-${details.finetune_id}`);
  if (!box) throw new ApiError(`Finetune ${details.finetune_id} is not in this key's LoRA list yet.`);
  if (state.models.some((model) => model.id === details.model)) {
    $("model").value = details.model;
    describeModel();
    describeTrainModel();
  }
  box.checked = true;
  box.closest(".lora").querySelector(".scale").value = details.default_strength ?? 1;
  const trigger = details.trigger_word;
  const prompt = $("prompt").value.trim();
  if (!new RegExp(`\\b${trigger}\\b`).test(prompt)) $("prompt").value = prompt ? `${trigger} ${prompt}` : `a photo of ${trigger}`;
  $("generate").scrollIntoView({ behavior: "smooth", block: "start" });
  $("prompt").focus();
}

// ---- start -------------------------------------------------------------------------------

async function loadAll() {
  showMessage("");
  if (!$("api-key").value.trim()) return showMessage("Enter your API key: `flux-serve run` prints one.");
  if (await attempt(loadModels)) {
    describeTrainModel();
    await Promise.all([attempt(loadLoras), attempt(refreshHistory), attempt(loadUsage), attempt(loadFinetunes)]);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    loadAll();
  });
  $("model").addEventListener("change", () => { describeModel(); describeTrainModel(); });
  $("generate").addEventListener("submit", generate);
  $("cancel-button").addEventListener("click", cancelRunning);
  $("history-more").addEventListener("click", () => attempt(() => loadHistory(state.historyCursor)));
  $("reference-files").addEventListener("change", (event) => {
    addReferences(event.target.files);
    event.target.value = "";  // the same file may be chosen again after its removal
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    addReferences(event.dataTransfer.files);
  });
  $("train-form").addEventListener("submit", train);
  $("train-files").addEventListener("change", (event) => {
    addTrainFiles(event.target.files);
    event.target.value = "";
  });
  const trainZone = $("train-drop");
  trainZone.addEventListener("dragover", (event) => { event.preventDefault(); trainZone.classList.add("over"); });
  trainZone.addEventListener("dragleave", () => trainZone.classList.remove("over"));
  trainZone.addEventListener("drop", (event) => {
    event.preventDefault();
    trainZone.classList.remove("over");
    addTrainFiles(event.dataTransfer.files);
  });
  loadAll();
});
