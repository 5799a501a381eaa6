// The room's models on both pages: the training's progress and, once done, "before / after"
// players on held-out prompts (the same noise for every model), from /api/room.
"use strict";
const ROOM_NAMES = {before: "before (the run's model)", dpo: "after: DPO on the room's pair verdicts",
                    baton_hd: "after: BATON HD on the room's yes/no labels"};

// an element with its text and data-* attributes (both pages build with it)
function cell(tag, text, data = {}) {
  const element = document.createElement(tag);
  element.textContent = text;
  Object.assign(element.dataset, data);
  return element;
}

function roomProgress(room) {
  const p = room.progress;
  if (!p) return "The room's models have not been trained yet.";
  if (p.error) return `Training failed: ${p.error}`;
  if (p.finished) return `The room's models are trained (${p.seconds ?? "?"} s).`;
  const done = Object.keys(p.done || {}).length;
  return `Training the room's models: ${p.stage || "starting"} (stage ${done + 1} of ${p.stages.length})…`;
}

function roomPlayers(room) {
  const listen = room.progress && room.progress.result && room.progress.result.listen;
  if (!listen) return [];
  return listen.clips.map((clip, k) => {
    const box = cell("div", "", {clip: String(k)});
    box.className = "card";
    box.append(cell("p", `Prompt: ${clip.prompt}`));
    for (const [name, src] of Object.entries(clip.players)) {
      const figure = document.createElement("figure");
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = src;
      audio.dataset.model = name;
      figure.append(cell("figcaption", ROOM_NAMES[name] || name), audio);
      box.append(figure);
    }
    return box;
  });
}

async function fetchRoom() {
  const response = await fetch("/api/room");
  return response.json();
}
