// PixelFlow player: captions. hls.js reads the master playlist's SUBTITLES group (one WebVTT
// rendition per language) and shows the chosen one in the <video>'s text tracks; this adds one
// button per language and "Off". The default language (DEFAULT=YES) is shown from the start.
// Safari's native HLS lists the same languages in its own captions menu.
(function () {
  "use strict";

  const box = document.getElementById("captions");
  let hls = null;

  function button(label, index, lang, pressed) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.track = String(index);
    if (lang) b.dataset.lang = lang;
    b.setAttribute("aria-pressed", String(pressed));
    b.addEventListener("click", () => select(index));
    return b;
  }

  function render() {
    const tracks = (hls && hls.subtitleTracks) || [];
    if (!tracks.length) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const current = hls.subtitleDisplay ? hls.subtitleTrack : -1;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = "Captions";
    const buttons = tracks.map((track, index) => button(track.name || track.lang, index, track.lang, current === index));
    box.replaceChildren(label, button("Off", -1, "", current === -1), ...buttons);
    box.hidden = false;
  }

  function select(index) {
    hls.subtitleDisplay = index >= 0;
    hls.subtitleTrack = index;
    render();
  }

  document.addEventListener("pixelflow:hls", (event) => {
    hls = event.detail;
    hls.on(window.Hls.Events.SUBTITLE_TRACKS_UPDATED, render);
    hls.on(window.Hls.Events.SUBTITLE_TRACK_SWITCH, render);
  });
})();
