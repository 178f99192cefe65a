// PixelFlow player: plays assets/<asset_id>/master.m3u8 through the local PixelFlow server.
// No build step: plain browser JavaScript plus the vendored hls.js (window.Hls).
(function () {
  "use strict";

  const ASSET_ID = /^[0-9a-f]{24}$/;
  const POLL_MS = 3000;

  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const renditionsBox = document.getElementById("renditions");
  const nowPlaying = document.getElementById("now-playing");
  const state = { assetId: null, token: null, hls: null, info: null, levels: [] };
  // A signed asset plays with a playback token (?token=...): it goes in the path of the playlist's
  // URL, so every playlist and segment hls.js resolves relative to it carries it too.
  const TOKEN_MESSAGES = {
    playback_token_required: ["This video is private", "Open this page with a playback token: ?asset=<id>&token=<token>."],
    playback_token_expired: ["The playback token has expired", "Ask the app for a new playback token and reload."],
    playback_token_invalid: ["The playback token is not valid", "The token was changed or signed with another key."],
    playback_token_wrong_asset: ["The playback token is for another video", "Use a token issued for this asset."],
  };

  function showTokenError(code, message) {
    const [title, hint] = TOKEN_MESSAGES[code] || ["Playback refused", ""];
    showError(title, code, hint || message);
  }
  window.pixelflow = state; // for the browser console

  function setState(name) {
    document.body.dataset.state = name;
  }

  function showError(title, code, message) {
    setState("error");
    document.getElementById("message-title").textContent = title;
    document.getElementById("message-code").textContent = code;
    document.getElementById("message-text").textContent = message || "";
    document.getElementById("message").hidden = false;
    statusLine.textContent = `${title} (${code})`;
    renditionsBox.replaceChildren();
    video.removeAttribute("poster");
    video.controls = false;
  }

  function formatDuration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "";
    const s = Math.round(seconds);
    const m = Math.floor(s / 60);
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  function formatRate(bitsPerSecond) {
    if (!bitsPerSecond) return "";
    return bitsPerSecond >= 1e6 ? `${(bitsPerSecond / 1e6).toFixed(1)} Mbps` : `${Math.round(bitsPerSecond / 1e3)} kbps`;
  }

  function renditionName(level) {
    const rungs = (state.info && state.info.renditions) || [];
    const rung = rungs.find((r) => r.height === level.height && r.width === level.width);
    return (rung && rung.name) || `${level.height}p`;
  }

  function button(label, detail, pressed, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    b.append(name);
    if (detail) {
      const small = document.createElement("small");
      small.textContent = detail;
      b.append(small);
    }
    b.setAttribute("aria-pressed", String(pressed));
    if (onClick) b.addEventListener("click", onClick); else b.disabled = true;
    return b;
  }

  // Buttons: "Auto" plus one per rendition, tallest first. Picking one pins hls.js to it.
  function renderRenditions() {
    const hls = state.hls;
    const auto = !hls || hls.autoLevelEnabled;
    const buttons = [button("Auto", "", auto, hls ? () => selectLevel(-1) : null)];
    buttons[0].dataset.level = "-1";
    state.levels
      .map((level, index) => ({ level, index }))
      .sort((a, b) => b.level.height - a.level.height)
      .forEach(({ level, index }) => {
        const pressed = !auto && hls.manualLevel === index;
        const b = button(renditionName(level), `${level.width}×${level.height} · ${formatRate(level.bitrate)}`,
          pressed, hls ? () => selectLevel(index) : null);
        b.classList.toggle("playing", Boolean(hls) && hls.currentLevel === index);
        b.dataset.level = String(index);
        b.dataset.height = String(level.height);
        buttons.push(b);
      });
    renditionsBox.replaceChildren(...buttons);
  }

  function selectLevel(index) {
    // currentLevel switches immediately (flushes the buffer); -1 returns to automatic selection.
    state.hls.currentLevel = index;
    renderRenditions();
    if (video.ended) {
      video.currentTime = 0;
    }
    video.play().catch(() => {});
  }

  function updateNowPlaying() {
    if (!video.videoHeight) return;
    const hls = state.hls;
    const mode = !hls ? "" : hls.autoLevelEnabled ? "Auto · " : "Pinned · ";
    nowPlaying.textContent = `${mode}playing ${video.videoWidth}×${video.videoHeight}`;
    nowPlaying.dataset.height = String(video.videoHeight);
  }

  function play(info) {
    const base = state.token ? `/t/${encodeURIComponent(state.token)}/assets/${state.assetId}/` : `/assets/${state.assetId}/`;
    state.base = base; // where the asset's files are (storyboard.js reads its storyboard there)
    const master = `${base}master.m3u8`;
    if (!info.audio_only) video.poster = `${base}${info.poster || "poster.jpg"}`;
    setState("ready");
    const parts = ["Ready"];
    if (info.duration) parts.push(formatDuration(info.duration));
    if (info.renditions && info.renditions.length) parts.push(`${info.renditions.length} renditions`);
    if (info.audio_only) parts.push("audio only");
    statusLine.textContent = parts.join(" · ");
    const links = (info.downloads || []).map((d) => {
      const a = document.createElement("a");
      a.href = `${base}${d.file}`;
      a.textContent = `Download ${d.name} ${d.file.endsWith(".m4a") ? "M4A" : "MP4"} (${(d.size / 1e6).toFixed(1)} MB)`;
      return a;
    });
    document.getElementById("downloads").replaceChildren(...links);

    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({ capLevelToPlayerSize: false, startLevel: -1 });
      state.hls = hls;
      document.dispatchEvent(new CustomEvent("pixelflow:hls", { detail: hls })); // captions.js
      let recovered = false;
      hls.on(window.Hls.Events.MANIFEST_PARSED, (_event, data) => {
        state.levels = data.levels;
        renderRenditions();
        video.play().catch(() => {}); // autoplay may be refused; the controls remain
      });
      hls.on(window.Hls.Events.LEVEL_SWITCHED, () => renderRenditions());
      hls.on(window.Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
          recovered = true;
          hls.recoverMediaError();
          return;
        }
        if (data.response && data.response.code === 403) {
          hls.destroy();
          recheck(); // the server says why (an expired token, most often)
          return;
        }
        const missing = data.response && data.response.code === 404;
        showError(missing ? "Asset files are missing" : "Playback failed", data.details || data.type,
          missing ? "The playlist or a segment could not be found." : String((data.error && data.error.message) || ""));
        hls.destroy();
      });
      hls.loadSource(master);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      // Native HLS (Safari): the browser picks the rendition itself.
      state.levels = (info.renditions || []).map((r) => ({ height: r.height, width: r.width, bitrate: r.bandwidth }));
      renderRenditions();
      video.src = master;
    } else {
      showError("This browser cannot play HLS", "unsupported_browser", "Neither Media Source Extensions nor native HLS are available.");
    }
  }

  function statusUrl() {
    const query = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
    return `/api/assets/${state.assetId}${query}`;
  }

  async function recheck() {
    const response = await fetch(statusUrl(), { cache: "no-store" }).catch(() => null);
    const info = response ? await response.json().catch(() => ({})) : {};
    if (response && response.status === 403) showTokenError(info.code, info.message);
    else showError("Playback refused", "http_403", "The server refused a playlist or segment.");
  }

  async function load() {
    let response;
    try {
      response = await fetch(statusUrl(), { cache: "no-store" });
    } catch (err) {
      showError("Server unreachable", "network_error", String(err));
      return;
    }
    const info = await response.json().catch(() => ({}));
    state.info = info;
    if (response.status === 403) {
      showTokenError(info.code, info.message);
    } else if (response.status === 404) {
      showError("Asset not found", info.code || "asset_not_found", info.message);
    } else if (!response.ok) {
      showError("Could not read the asset", info.code || `http_${response.status}`, info.message);
    } else if (info.status === "ready") {
      play(info);
    } else if (info.status === "processing" && info.playable) {
      // A progressive asset (docs/chunks.md): its playlists grow while the rest is encoded.
      play(info);
      statusLine.textContent = "Playable while processing… more of it arrives as it is encoded.";
      setTimeout(watch, POLL_MS);
    } else if (info.status === "rejected") {
      showError("This upload was rejected", info.error.code, info.error.message);
    } else if (info.status === "failed") {
      showError("Processing failed", info.error.code, info.error.message);
    } else if (info.status === "broken") {
      showError("Asset files are missing", info.error.code, info.error.message);
    } else {
      setState("processing");
      statusLine.textContent = "Processing… this page starts playback when the asset is ready.";
      setTimeout(load, POLL_MS);
    }
  }

  // While a playable asset is still processing: its state, until it is ready (or withdrawn,
  // which its playlists' 404s show as an error).
  async function watch() {
    const response = await fetch(statusUrl(), { cache: "no-store" }).catch(() => null);
    const info = response && response.ok ? await response.json().catch(() => null) : null;
    if (info && info.status === "ready") {
      state.info = info;
      const parts = ["Ready"];
      if (info.duration) parts.push(formatDuration(info.duration));
      if (info.renditions && info.renditions.length) parts.push(`${info.renditions.length} renditions`);
      statusLine.textContent = parts.join(" · ");
      document.body.dataset.complete = "true";
      return;
    }
    if (info && (info.status === "rejected" || info.status === "failed")) {
      if (state.hls) state.hls.destroy();
      showError(info.status === "rejected" ? "This upload was rejected" : "Processing failed", info.error.code,
        info.error.message);
      return;
    }
    setTimeout(watch, POLL_MS);
  }

  video.addEventListener("resize", updateNowPlaying);
  video.addEventListener("playing", () => { setState("playing"); updateNowPlaying(); });

  const params = new URLSearchParams(location.search);
  const assetId = params.get("asset") || "";
  state.token = params.get("token") || null;
  document.getElementById("asset-id").textContent = assetId;
  if (!ASSET_ID.test(assetId)) {
    showError("Not an asset id", "invalid_asset_id", "Open this page as /?asset=<asset_id> (24 hex characters).");
  } else {
    state.assetId = assetId;
    load();
  }
})();
