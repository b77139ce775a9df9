// saltnado's live page: one ES module, no build step, nothing fetched from elsewhere.
//
// It uses the API as any client does: POST /login (the token is kept in
// sessionStorage, so it ends with the tab), POST / lowstates with X-Auth-Token,
// /formatted_events/<token>?delta=1 for minions and jobs (the whole view first,
// then only what changed, null for what went away) and /all_events/<token> for
// the raw event log. Everything from the server reaches the page through
// textContent, never as markup.

const TOKEN_KEY = "saltnado.token";
const USER_KEY = "saltnado.user";
const EAUTH_KEY = "saltnado.eauth"; // not a secret: the form's default next time
const MAX_EVENTS = 300; // lines in the event log
const MAX_HELD = 1000; // events kept while the log is paused
const MAX_JOBS = 30; // jobs listed, newest first
const MAX_DATA_CHARS = 400; // of an event's data shown in the log
const RECONNECT_MS = 3000;
const KEYS_EVERY_MS = 30000; // a key file put in place by hand fires no event: look again this often

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  minions: new Map(), // id → {id, grains?}: the minions /formatted_events lists (connected)
  accepted: [], // accepted keys, so a minion that is not connected shows as down
  lastSeen: new Map(), // id → Date of its last return or presence
  jobs: new Map(), // jid → job, oldest first
  openJobs: new Set(), // jids whose details are open
  sockets: new Set(),
  paused: false,
  held: [],
  missed: 0, // events not kept while paused (past MAX_HELD)
};

/** An element holding ``text`` as text, never parsed as HTML. */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(label, onClick, ariaLabel) {
  const node = el("button", label);
  node.type = "button";
  if (ariaLabel) node.setAttribute("aria-label", ariaLabel);
  node.addEventListener("click", onClick);
  return node;
}

function setStatus(text) {
  $("status").textContent = text;
}

class SessionEnded extends Error {}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers["X-Auth-Token"] = state.token;
  const options = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/login") {
    loggedOut("the session has ended: log in again");
    throw new SessionEnded("logged out");
  }
  if (!response.ok) throw new Error(`${response.status}: ${answer.return ?? response.statusText}`);
  return answer;
}

const lowstate = async (chunk) => (await api("POST", "/", chunk)).return[0];

// -- session -------------------------------------------------------------------
async function login(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const fields = new FormData(form);
  $("login-error").textContent = "";
  try {
    const answer = await api("POST", "/login", {
      username: fields.get("username"),
      password: fields.get("password"),
      eauth: fields.get("eauth"),
    });
    const record = answer.return[0];
    state.token = record.token;
    sessionStorage.setItem(TOKEN_KEY, record.token);
    sessionStorage.setItem(USER_KEY, record.user);
    localStorage.setItem(EAUTH_KEY, fields.get("eauth"));
    form.elements.password.value = "";
    start(record.user);
  } catch (error) {
    $("login-error").textContent = error.message;
  }
}

async function logout() {
  try {
    await api("POST", "/logout", {});
  } catch (error) {
    // the token may be gone already: the page logs out either way
  }
  loggedOut("logged out");
}

function loggedOut(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  for (const ws of state.sockets) ws.close(1000);
  state.sockets.clear();
  state.minions.clear();
  state.jobs.clear();
  state.accepted = [];
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setStatus(message);
  $("login").elements.username.focus();
}

function start(user) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  setStatus(user ? `logged in as ${user}` : "logged in");
  connect("formatted_events", "?delta=1", onView);
  connect("all_events", "", onEvent);
  refreshKeys().catch(showError);
}

function showError(error) {
  if (!(error instanceof SessionEnded)) setStatus(error.message);
}

// -- streams -------------------------------------------------------------------
function connect(stream, query, onMessage) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/${stream}/${encodeURIComponent(state.token)}${query}`);
  ws.addEventListener("open", () => {
    if (stream === "formatted_events") {
      state.minions.clear(); // the whole view comes first, again after a reconnect
      state.jobs.clear();
    }
    ws.send("websocket client ready");
  });
  ws.addEventListener("message", (message) => onMessage(JSON.parse(message.data), ws));
  ws.addEventListener("close", (event) => {
    state.sockets.delete(ws);
    if (!state.token) return;
    setStatus(`${stream}: closed (${event.code}${event.reason ? `, ${event.reason}` : ""}); reconnecting`);
    // a key.list_all first: if the session is over it logs the page out, and no reconnect follows
    setTimeout(() => state.token && refreshKeys().then(() => connect(stream, query, onMessage), showError), RECONNECT_MS);
  });
  state.sockets.add(ws);
}

function merge(map, changes) {
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) map.delete(key);
    else map.set(key, value);
  }
}

function onView(message, ws) {
  if (message.tag) {
    // saltnado/gap: a delta stream with a hole in it is rebuilt by reconnecting
    if (message.tag === "saltnado/gap") ws.close(4000, "gap");
    setStatus(`${message.tag}: ${JSON.stringify(message.data)}`);
    return;
  }
  if (message.minions) {
    merge(state.minions, message.minions);
    renderMinions();
  }
  if (message.jobs) {
    merge(state.jobs, message.jobs);
    renderJobs();
  }
}

function onEvent(event) {
  const parts = event.tag.split("/");
  const now = new Date();
  if (parts[0] === "salt" && parts[1] === "job" && parts[3] === "ret" && parts[4]) {
    state.lastSeen.set(parts[4], now);
    renderMinions();
  } else if (event.tag === "salt/presence/present" && Array.isArray(event.data.present)) {
    for (const id of event.data.present) state.lastSeen.set(id, now);
    renderMinions();
  } else if (event.tag === "salt/key" || event.tag === "salt/auth") {
    refreshKeys().catch(showError);
  }
  if (state.paused) {
    state.held.push([now, event]);
    if (state.held.length > MAX_HELD) {
      state.held.shift();
      state.missed += 1;
    }
    $("held").textContent = `${state.held.length} held${state.missed ? `, ${state.missed} not kept` : ""}`;
  } else {
    logEvent(now, event);
  }
}

function logEvent(when, event) {
  const line = el("li");
  line.dataset.tag = event.tag;
  let data = JSON.stringify(event.data);
  if (data.length > MAX_DATA_CHARS) data = `${data.slice(0, MAX_DATA_CHARS)}…`;
  line.append(el("time", when.toLocaleTimeString()), " ", el("code", event.tag, "tag"), " ", el("span", data, "data"));
  line.hidden = !matches(event.tag);
  const log = $("events");
  log.prepend(line);
  while (log.children.length > MAX_EVENTS) log.lastElementChild.remove();
}

function matches(tag) {
  const filter = $("event-filter").value.trim();
  return !filter || tag.includes(filter);
}

function applyFilter() {
  for (const line of $("events").children) line.hidden = !matches(line.dataset.tag);
}

function togglePause() {
  state.paused = !state.paused;
  const pause = $("pause");
  pause.setAttribute("aria-pressed", String(state.paused));
  pause.textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) {
    for (const [when, event] of state.held) logEvent(when, event);
    state.held = [];
    state.missed = 0;
    $("held").textContent = "";
  }
}

// -- minions, jobs, keys ---------------------------------------------------------
function renderMinions() {
  const ids = [...new Set([...state.minions.keys(), ...state.accepted])].sort();
  const rows = ids.map((id) => {
    const entry = state.minions.get(id);
    const grains = (entry && entry.grains) || {};
    const seen = state.lastSeen.get(id);
    const row = el("tr");
    row.dataset.minion = id;
    const name = el("th", id);
    name.scope = "row";
    const ipv4 = Array.isArray(grains.ipv4) ? grains.ipv4.filter((a) => a !== "127.0.0.1") : [];
    row.append(
      name,
      el("td", entry ? "up" : "down", entry ? "up" : "down"),
      el("td", [grains.os, grains.osrelease].filter((v) => typeof v === "string").join(" ")),
      el("td", ipv4.join(", ")),
      el("td", typeof grains.saltversion === "string" ? grains.saltversion : ""),
      el("td", seen ? seen.toLocaleTimeString() : ""),
    );
    return row;
  });
  if (!rows.length) {
    const cell = el("td", "no minion yet");
    cell.colSpan = 6;
    rows.push(el("tr"));
    rows[0].append(cell);
  }
  $("minions").tBodies[0].replaceChildren(...rows);
}

function renderJobs() {
  const jobs = [...state.jobs.values()].slice(-MAX_JOBS).reverse();
  $("jobs").replaceChildren(...jobs.map(renderJob));
}

function renderJob(job) {
  const minions = Object.entries(job.minions || {});
  const returned = minions.filter(([, entry]) => "retcode" in entry);
  const failed = returned.filter(([, entry]) => !entry.success);
  const details = el("details");
  details.open = state.openJobs.has(job.jid);
  details.addEventListener("toggle", () => {
    if (details.open) state.openJobs.add(job.jid);
    else state.openJobs.delete(job.jid);
  });
  const summary = el("summary");
  summary.append(
    el("code", job.fun ?? "?"),
    ` on ${job.tgt ?? "?"} `,
    el("span", job.state, `state ${job.state}`),
    ` ${returned.length}/${minions.length} returned${failed.length ? `, ${failed.length} failed` : ""} `,
    el("small", job.jid),
  );
  const results = el("ul", undefined, "plain");
  for (const [id, entry] of minions) {
    const item = el("li");
    const outcome = "retcode" in entry ? (entry.success ? "ok" : `failed (retcode ${entry.retcode})`) : "waiting";
    item.append(el("strong", id), ` ${outcome}`);
    if ("return" in entry) item.append(el("pre", JSON.stringify(entry.return, null, 2)));
    results.append(item);
  }
  details.append(summary, results);
  const line = el("li");
  line.dataset.jid = job.jid;
  line.append(details);
  return line;
}

async function refreshKeys() {
  const keys = (await lowstate({ client: "wheel", fun: "key.list_all" })).data.return;
  state.accepted = keys.minions || [];
  const pending = keys.minions_pre || [];
  const items = pending.map((id) => {
    const item = el("li");
    item.dataset.key = id;
    item.append(
      el("code", id),
      " ",
      button("Accept", () => keyAction("key.accept", id), `Accept key ${id}`),
      " ",
      button("Reject", () => keyAction("key.reject", id), `Reject key ${id}`),
    );
    return item;
  });
  $("keys").replaceChildren(...(items.length ? items : [el("li", "no pending key", "muted")]));
  renderMinions();
}

async function keyAction(fun, id) {
  try {
    await lowstate({ client: "wheel", fun, match: id });
    setStatus(`${fun} ${id}: done`);
    await refreshKeys();
  } catch (error) {
    showError(error);
  }
}

// -- run a command -----------------------------------------------------------------
function parseArgs(text) {
  const trimmed = text.trim();
  if (!trimmed) return [];
  if (trimmed.startsWith("[")) {
    const args = JSON.parse(trimmed);
    if (!Array.isArray(args)) throw new Error("arguments: a JSON list, or words separated by spaces");
    return args;
  }
  return trimmed.split(/\s+/);
}

async function run(event) {
  event.preventDefault();
  const fields = new FormData(event.currentTarget);
  const out = $("run-result");
  try {
    const chunk = { client: "local", tgt: fields.get("tgt"), fun: fields.get("fun") };
    const args = parseArgs(fields.get("args"));
    if (args.length) chunk.arg = args;
    out.textContent = "running…";
    out.textContent = JSON.stringify(await lowstate(chunk), null, 2);
  } catch (error) {
    out.textContent = error instanceof SessionEnded ? "" : error.message;
  }
}

$("login").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
$("run").addEventListener("submit", run);
$("pause").addEventListener("click", togglePause);
$("event-filter").addEventListener("input", applyFilter);
$("refresh-keys").addEventListener("click", () => refreshKeys().catch(showError));
setInterval(() => state.token && refreshKeys().catch(showError), KEYS_EVERY_MS);
$("login").elements.eauth.value = localStorage.getItem(EAUTH_KEY) || "auto";
if (state.token) start(sessionStorage.getItem(USER_KEY));
else $("login").elements.username.focus();
