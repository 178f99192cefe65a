// PixelFlow player: seek-bar previews from the asset's storyboard (storyboard.vtt mapping time
// ranges to tiles of storyboard.jpg with #xywh= fragments). A timeline under the video shows
// the tile of the time under the pointer; a click seeks there. Assets without a storyboard
// keep the video's own controls only.
(function () {
  "use strict";

  const video = document.getElementById("video");
  const bar = document.getElementById("timeline");
  const played = bar.querySelector(".played");
  const preview = document.getElementById("preview");
  const previewTime = preview.querySelector("span");
  let cues = [];

  function seconds(stamp) {
    const parts = stamp.trim().split(":").map(Number);
    return parts.reduce((total, part) => total * 60 + part, 0);
  }

  function parseVtt(text, base) {
    const found = [];
    for (const block of text.replace(/\r\n/g, "\n").split(/\n\n+/)) {
      const lines = block.split("\n").filter(Boolean);
      const timing = lines.findIndex((line) => line.includes("-->"));
      if (timing < 0 || !lines[timing + 1]) continue;
      const [start, end] = lines[timing].split("-->").map(seconds);
      const target = new URL(lines[timing + 1].trim(), base);
      const xywh = /^#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(target.hash);
      if (!xywh || !(end > start)) continue;
      target.hash = "";
      found.push({ start, end, image: target.href, x: +xywh[1], y: +xywh[2], w: +xywh[3], h: +xywh[4] });
    }
    return found;
  }

  function cueAt(time) {
    return cues.find((cue) => time >= cue.start && time < cue.end) || cues[cues.length - 1];
  }

  function label(time) {
    const s = Math.floor(time);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function timeAt(event) {
    const rect = bar.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    return { fraction, time: fraction * (video.duration || 0) };
  }

  function show(event) {
    const { fraction, time } = timeAt(event);
    const cue = cueAt(time);
    if (!cue) return;
    preview.style.width = `${cue.w}px`;
    preview.style.height = `${cue.h}px`;
    preview.style.backgroundImage = `url("${cue.image}")`;
    preview.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    const half = cue.w / 2;
    preview.style.left = `${Math.min(bar.clientWidth - half, Math.max(half, fraction * bar.clientWidth)) - half}px`;
    preview.dataset.tile = `${cue.x},${cue.y},${cue.w},${cue.h}`;
    preview.dataset.time = time.toFixed(2);
    previewTime.textContent = label(time);
    preview.hidden = false;
  }

  async function load() {
    const state = window.pixelflow;
    if (cues.length || !state || !state.base || !state.info || !state.info.storyboard) return;
    const url = new URL(`${state.base}${state.info.storyboard.vtt}`, location.href);
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) return;
      cues = parseVtt(await response.text(), url);
    } catch (err) {
      return; // previews are a nicety: playback goes on without them
    }
    if (cues.length) bar.hidden = false;
  }

  bar.addEventListener("pointermove", show);
  bar.addEventListener("pointerleave", () => { preview.hidden = true; });
  bar.addEventListener("click", (event) => {
    if (video.duration) video.currentTime = timeAt(event).time;
  });
  video.addEventListener("timeupdate", () => {
    played.style.width = video.duration ? `${(100 * video.currentTime) / video.duration}%` : "0";
  });
  video.addEventListener("loadedmetadata", load);
})();
