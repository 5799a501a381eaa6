// The participant's page: join with a name and the session code (from the join URL), pick a task,
// answer item by item. The server hands out a token on joining; this browser keeps it and sends it
// with every request (it, not the name, says who answers). Every answer goes to the server (which
// appends it to this person's file) before the page moves on.
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TOKEN_KEY = "t2a-workshop-token";
let me = localStorage.getItem(TOKEN_KEY);
let task = params.get("task");
let state = null;
let busy = false;
const BUTTONS = {
  pairs: [["A", "A is better"], ["B", "B is better"], ["skip", "Skip"], ["undo", "Undo"]],
  feedback: [["yes", "Yes"], ["no", "No"], ["skip", "Skip"], ["undo", "Undo"]],
};

async function api(path, body) {
  const headers = me ? {"X-Workshop-Token": me} : {};
  const init = body ? {method: "POST", headers: {...headers, "Content-Type": "application/json"}, body: JSON.stringify(body)} : {headers};
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) {
    const error = new Error(data.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function show(section) {
  for (const id of ["join", "tasks", "item"]) $(id).hidden = id !== section;
  $("error").textContent = "";
}

function remember() {
  const url = new URL(location.href);
  if (task) url.searchParams.set("task", task); else url.searchParams.delete("task");
  history.replaceState(null, "", url);
  localStorage.setItem(TOKEN_KEY, me);
}

function fail(error) {
  $("error").textContent = error.message;
}

async function start() {
  if (!me) return show("join");
  try {
    const overview = await api("/api/overview");
    $("who").textContent = overview.name;
    if (task) return openTask(task);
    remember();
    renderTasks(overview);
  } catch (error) {
    if (error.status === 401 || error.status === 403) { localStorage.removeItem(TOKEN_KEY); me = null; show("join"); }
    else fail(error);
  }
}

async function followRoom() {
  if ($("tasks").hidden) return setTimeout(followRoom, 5000);
  try {
    const room = await fetchRoom();
    $("room-status").textContent = roomProgress(room);
    if (!$("room-players").childElementCount) $("room-players").replaceChildren(...roomPlayers(room));
  } catch (error) { /* the next look will tell */ }
  setTimeout(followRoom, 5000);  // only after this answer: never a pile of requests
}

function renderTasks(overview) {
  const list = $("task-list");
  list.replaceChildren();
  for (const t of overview.tasks) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.dataset.task = t.task;
    button.textContent = `${t.task}: ${t.question} (${t.done} of ${t.n} done)`;
    button.onclick = () => openTask(t.task);
    li.append(button);
    list.append(li);
  }
  show("tasks");
}

async function openTask(name) {
  task = name;
  remember();
  try {
    render(await api(`/api/state?task=${encodeURIComponent(task)}`));
  } catch (error) {
    task = null;
    remember();
    fail(error);
  }
}

function player(p) {
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = p.label;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "auto";
  audio.src = p.src + ".wav";
  const img = document.createElement("img");
  img.src = p.src + ".png";
  img.alt = `spectrogram of ${p.label}`;
  figure.append(caption, audio, img);
  return figure;
}

function render(s) {
  state = s;
  show("item");
  const item = s.item;
  $("progress").textContent = item ? `item ${item.position} of ${s.n}` : `all ${s.n} done`;
  $("prompt").innerHTML = "";
  $("question").textContent = item ? s.question : "";
  if (item) {
    const b = document.createElement("b");
    b.textContent = "Prompt: ";
    $("prompt").append(b, item.prompt);
  } else {
    const t = s.truth;
    const truth = !(t && t.n) ? "" : s.kind === "pairs"
      ? ` On the ${t.n} pairs whose better clip is known, you picked it ${t.agree} times.`
      : ` On the ${t.n} clips whose answer is known, yours matched it ${t.agree} times.`;
    $("prompt").textContent = `All ${s.n} done, thank you.${truth} (Undo still works.)`;
  }
  $("players").replaceChildren(...(item ? item.players.map(player) : []));
  const buttons = BUTTONS[s.kind].map(([value, label]) => {
    const button = document.createElement("button");
    button.textContent = label;
    button.dataset.answer = value;
    button.disabled = value === "undo" ? !s.can_undo : !item;
    button.onclick = () => (value === "undo" ? undo() : answer(value));
    return button;
  });
  $("buttons").replaceChildren(...buttons);
  $("status").textContent = [s.message, item ? `Now: item ${item.position} of ${s.n}.` : ""].filter(Boolean).join(" ");
  $("keys").textContent = "Keys: " + Object.entries(s.keys).map(([k, v]) => `${k} = ${v}`).join(", ");
}

async function send(path, body) {
  if (busy) return;
  busy = true;
  for (const b of $("buttons").querySelectorAll("button")) b.disabled = true;
  try {
    render(await api(path, body));
  } catch (error) {
    if (error.status === 409) await openTask(task);
    fail(error);
  } finally {
    busy = false;
  }
}

const answer = (value) => state && state.item && send("/api/answer", {task, id: state.item.id, answer: value});
const undo = () => state && send("/api/undo", {task});

document.addEventListener("keydown", (event) => {
  if (!state || $("item").hidden || event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const value = state.keys[event.key.toLowerCase()];
  if (!value) return;
  event.preventDefault();
  if (value === "undo") undo(); else answer(value);
});

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const overview = await api("/api/join", {name: $("name").value, code: $("code").value.trim()});
    me = overview.token;
    task = null;
    remember();
    $("who").textContent = overview.name;
    renderTasks(overview);
  } catch (error) {
    fail(error);
  }
});

$("back").addEventListener("click", (event) => {
  event.preventDefault();
  task = null;
  state = null;
  followRoom();
$("code").value = params.get("code") || "";
$("code-label").hidden = Boolean(params.get("code"));
start();
});

followRoom();
$("code").value = params.get("code") || "";
$("code-label").hidden = Boolean(params.get("code"));
start();
