// The teacher's page: follows every participant's files through /api/teacher, two seconds after
// the last answer came back (a slow server never gets a pile of polls). Every request carries the
// teacher's token from this page's URL (/teacher?token=...).
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const HEADERS = {"X-Teacher-Token": TOKEN};
const POLL_MS = 2000;
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(100 * x)}%`);
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function renderPeople(data) {
  const tasks = Object.keys(data.tasks);
  const head = document.createElement("tr");
  const known = tasks.filter((t) => data.tasks[t].truth);  // tasks with items whose truth is known
  head.append(cell("th", "participant"), ...tasks.map((t) => cell("th", t)),
              ...known.map((t) => cell("th", `${t}: agrees with the truth`)));
  const rows = data.participants.map((p) => {
    const tr = document.createElement("tr");
    tr.append(cell("td", p.name));
    for (const t of tasks) {
      const {done, n} = p.progress[t];
      tr.append(cell("td", `${done} / ${n}`, {person: p.id, task: t, done: String(done)}));
    }
    for (const t of known) {
      const mine = data.tasks[t].truth.people[p.name];
      tr.append(cell("td", mine && mine.n ? `${pct(mine.agree)} of ${mine.n}` : "–", {truth: p.id, truthTask: t}));
    }
    return tr;
  });
  $("people").replaceChildren(head, ...rows);
}

function renderTask(name, t) {
  const a = t.agreement || {};
  const merged = t.merged || {};
  const card = document.createElement("section");
  card.className = "card";
  card.dataset.task = name;
  card.append(cell("h3", `${name}: ${t.question}`));
  const facts = [
    ["people", (a.labellers || []).length],
    ["items answered by two or more", a.items_multi ?? 0],
    ["mean Cohen's κ", fmt(a.mean_cohen_kappa)],
    ["Fleiss' κ", a.fleiss_items ? `${fmt(a.fleiss_kappa)} (${a.fleiss_items} items × ${a.fleiss_raters} people)` : "–"],
    ["mean agreement", a.mean_percent_agreement == null ? "–" : `${fmt(a.mean_percent_agreement, 0)}%`],
    ["merged", Object.entries(merged).map(([k, v]) => `${k} ${v}`).join(", ") || "nothing yet"],
  ];
  if (t.kind === "pairs") facts.push(["verdicts agreeing with the ranker", a.verdicts ? `${fmt(100 * a.agree_with_ranker, 0)}% of ${a.verdicts}` : "–"]);
  if (t.truth) {
    const {room, ranker} = t.truth;
    facts.push(["items whose truth is known (gold)", `${t.truth.heard} heard of ${t.truth.items}`],
               ["the room's majority agrees with the truth", room.n ? `${pct(room.agree)} of ${room.n}` : "–"],
               ["the ranker agrees with the truth", ranker.n ? `${pct(ranker.agree)} of ${ranker.n}` : "no ranker scores in this run"]);
  }
  const dl = document.createElement("dl");
  for (const [key, value] of facts) dl.append(cell("dt", key), cell("dd", String(value), {fact: key}));
  card.append(dl);
  const pairs = Object.entries(a.pairwise || {});
  if (pairs.length) {
    const table = document.createElement("table");
    const head = document.createElement("tr");
    head.append(cell("th", "pair"), cell("th", "shared items"), cell("th", "agreement"), cell("th", "Cohen's κ"));
    table.append(head);
    for (const [pair, v] of pairs) {
      const tr = document.createElement("tr");
      tr.append(cell("td", pair), cell("td", v.n), cell("td", `${fmt(v.percent_agreement, 0)}%`),
                cell("td", fmt(v.cohen_kappa), {kappa: pair}));
      table.append(tr);
    }
    card.append(table);
    if (a.pairs_total > pairs.length) card.append(cell("p", `the ${pairs.length} of ${a.pairs_total} pairs of people who agree least`));
  }
  return card;
}

async function refresh() {
  try {
    const response = await fetch("/api/teacher", {headers: HEADERS});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error);
    renderPeople(data);
    $("tasks").replaceChildren(...Object.entries(data.tasks).map(([name, t]) => renderTask(name, t)));
    $("updated").textContent = `answers in ${data.out_dir}; updated ${new Date().toLocaleTimeString()}`;
    renderRoom(await fetchRoom());
    $("error").textContent = "";
  } catch (error) {
    $("error").textContent = `cannot reach the workshop server: ${error.message}`;
  }
  setTimeout(refresh, POLL_MS);  // the next poll only once this one has its answer
}

$("merge").addEventListener("click", async () => {
  const response = await fetch("/api/merge", {method: "POST", headers: {...HEADERS, "Content-Type": "application/json"}, body: "{}"});
  const written = await response.json();
  $("written").replaceChildren(...Object.entries(written).map(([task, w]) =>
    cell("li", w.path ? `${task}: ${w.rows} merged rows in ${w.path}` : `${task}: ${w.note}`, {task})));
});

function renderRoom(room) {
  $("room-status").textContent = roomProgress(room);
  $("train").disabled = room.running;
  const result = room.progress && room.progress.result;
  const verdict = (result && result.listen && result.listen.verdict) || {};
  const rows = Object.entries(verdict).flatMap(([model, metrics]) => Object.entries(metrics).map(([metric, e]) =>
    [model, metric, e.n ? `${fmt(e.difference)} [${fmt(e.low)}, ${fmt(e.high)}]` : "–", String(e.n)]));
  const head = document.createElement("tr");
  head.append(...["model", "judged", "after − before [95% interval]", "prompts"].map((h) => cell("th", h)));
  $("verdict").replaceChildren(...(rows.length ? [head] : []), ...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.append(...r.map((x, i) => cell("td", x, i === 2 ? {verdict: `${r[0]}:${r[1]}`} : {})));
    return tr;
  }));
  if (!$("room-players").childElementCount) $("room-players").replaceChildren(...roomPlayers(room));
}

$("train").addEventListener("click", async () => {
  $("train").disabled = true;
  const response = await fetch("/api/train", {method: "POST", headers: {...HEADERS, "Content-Type": "application/json"}, body: "{}"});
  const answer = await response.json();
  $("room-status").textContent = response.ok ? "Training started…" : answer.error;
});

refresh();
