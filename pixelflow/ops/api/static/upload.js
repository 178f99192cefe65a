// The upload page: a file goes straight to S3 through the API's presigned URLs (one PUT, or one
// PUT per part), resumes after a reload from the parts S3 already has, then the asset is
// followed from preparing (with progress) to ready and played. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "pixelflow.token";
const PENDING_KEY = "pixelflow.pending";

function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) $("status").textContent = text;
}

function setProgress(percent) {
  $("progress").value = Math.max(0, Math.min(100, percent));
  document.body.dataset.progress = String(Math.round($("progress").value));
}

function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    localStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return $("token").value || localStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + token() }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? {} : await response.json();
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || response.statusText);
    error.code = data.error && data.error.code;
    error.status = response.status;
    throw error;
  }
  return data.data;
}

// One PUT of a blob to a presigned URL, with upload progress; resolves with the ETag.
function put(url, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300)
      ? resolve((xhr.getResponseHeader("ETag") || "").replace(/"/g, ""))
      : reject(new Error("S3 answered HTTP " + xhr.status));
    xhr.onerror = () => reject(new Error("the connection to S3 was interrupted"));
    xhr.send(blob);
  });
}

function fileKey(file) {
  return [file.name, file.size, file.lastModified].join(":");
}

function remember(file, uploadId) {
  localStorage.setItem(PENDING_KEY, JSON.stringify({ key: fileKey(file), name: file.name, upload: uploadId }));
}

function pending() {
  try { return JSON.parse(localStorage.getItem(PENDING_KEY) || "null"); } catch (_e) { return null; }
}

// The upload to continue for this file: the remembered one if it is still waiting, else a new one.
async function uploadFor(file) {
  const saved = pending();
  if (saved && saved.key === fileKey(file)) {
    try {
      const upload = await api("GET", "/v1/uploads/" + saved.upload);
      if (upload.status === "waiting" || upload.status === "asset_created") return upload;
    } catch (error) {
      if (error.status === 401) throw error;
    }
  }
  const upload = await api("POST", "/v1/uploads", { filename: file.name, size: file.size });
  remember(file, upload.id);
  return upload;
}

async function send(file, upload) {
  if (upload.status === "asset_created") return upload;
  if (!upload.multipart) {
    setState("uploading", "Uploading " + file.name + "…");
    await put(upload.url, file, (loaded) => setProgress(100 * loaded / file.size));
    setProgress(100);
  } else {
    const mp = upload.multipart;
    const received = new Map(upload.parts_received.map((p) => [p.part_number, p.etag]));
    let done = upload.parts_received.reduce((sum, p) => sum + p.size, 0);
    setState("uploading", received.size
      ? "Resuming " + file.name + ": " + received.size + " of " + mp.part_count + " parts already sent…"
      : "Uploading " + file.name + " in " + mp.part_count + " parts…");
    setProgress(100 * done / file.size);
    for (const part of mp.parts) {
      if (received.has(part.part_number)) continue;
      const start = (part.part_number - 1) * mp.part_size;
      const blob = file.slice(start, start + part.size);
      const etag = await put(part.url, blob, (loaded) => setProgress(100 * (done + loaded) / file.size));
      received.set(part.part_number, etag);
      done += part.size;
      setProgress(100 * done / file.size);
    }
    setState("uploading", "Assembling " + file.name + "…");
    upload = await api("POST", "/v1/uploads/" + upload.id + "/complete", {
      parts: [...received.entries()].map(([part_number, etag]) => ({ part_number, etag })),
    });
  }
  // The object exists once S3 has it all; the upload says which asset it became.
  for (;;) {
    upload = await api("GET", "/v1/uploads/" + upload.id);
    if (upload.status === "asset_created") return upload;
    if (upload.status !== "waiting") throw new Error("the upload is " + upload.status);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function follow(assetId) {
  $("asset-id").textContent = assetId;
  for (;;) {
    let asset = null;
    try {
      asset = await api("GET", "/v1/assets/" + assetId);
    } catch (error) {
      if (error.status !== 404) throw error;  // the flow has not recorded it yet
    }
    if (asset && asset.status === "ready") return play(asset, await playbackOf(asset));
    if (asset && asset.status === "errored") {
      const e = asset.errors || {};
      setState("errored", "The video was not accepted: " + (e.code || "error") + ": " + (e.message || ""));
      return;
    }
    const percent = asset && asset.progress != null ? asset.progress : 0;
    setProgress(percent);
    setState("preparing", "Preparing the video… " + Math.round(percent) + " %");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// A signed asset (private playback) plays with a playback token, which the page asks the API for.
async function playbackOf(asset) {
  if (asset.playback_policy !== "signed") return asset.playback;
  return (await api("POST", "/v1/assets/" + asset.id + "/playback-tokens", {})).playback;
}

function play(asset, playback) {
  localStorage.removeItem(PENDING_KEY);
  setProgress(100);
  setState("ready", "Ready: " + asset.renditions.map((r) => r.name).join(", ") + ".");
  const video = $("video");
  video.hidden = false;
  video.poster = playback.poster;
  video.addEventListener("playing", () => { document.body.dataset.state = "playing"; }, { once: true });
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls();
    hls.loadSource(playback.hls);
    hls.attachMedia(video);
    hls.on(window.Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
  } else {
    video.src = playback.hls;
    video.play().catch(() => {});
  }
}

async function start(file) {
  try {
    $("resume-hint").hidden = true;
    setProgress(0);
    const upload = await send(file, await uploadFor(file));
    await follow(upload.asset_id);
  } catch (error) {
    setState("errored", "Upload stopped: " + (error.code ? error.code + ": " : "") + error.message +
             ". Pick the same file again to resume.");
  }
}

$("token").value = token();
$("token").addEventListener("change", () => localStorage.setItem(TOKEN_KEY, $("token").value));
$("file").addEventListener("change", () => { if ($("file").files[0]) start($("file").files[0]); });
const saved = pending();
if (saved) {
  $("resume-hint").hidden = false;
  $("resume-hint").textContent = "An upload of " + saved.name + " was interrupted: pick it again to resume.";
}
