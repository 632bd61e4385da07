// The viewer page: the home view (match list, leaderboards) or the match view (canvas,
// timeline, controls, scoreboard), chosen by the URL. Deep link (docs/viewer.md):
//   /?match=ID&tick=T&follow=PLAYER[&token=JWT]
// opens match ID paused at tick T following PLAYER; without `tick` it opens a live
// match at its live edge and a finished one at the start.
import { Api } from "./api.js";
import { plainState, scoreboard } from "./arena.js";
import { bindControls, SPEEDS } from "./controls.js";
import { Renderer } from "./renderer.js";
import { CHUNK_TICKS, ReplaySession } from "./session.js";
import { Timeline, clock } from "./timeline.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const api = new Api(params.get("token"));
const LIVE_POLL_MS = 250;
const MARKERS_POLL_MS = 3000;
const LIST_POLL_MS = 5000;
const URL_UPDATE_MS = 1000;
const EFFECT_TICKS = 60;       // recent ticks whose events the renderer animates
const LOG_LIMIT = 500;

// -- the documented test hook (docs/viewer.md, "Test hook") -----------------------------
let resolveReady;
const hook = {
  view: null,
  ready: new Promise((r) => (resolveReady = r)),
  events: [],
  state: () => (session?.state ? plainState(session.state) : null),
  tick: () => session?.tick ?? null,
  frames: () => renderer?.frames ?? 0,
  playing: () => player.playing,
  live: () => player.liveFollow,
  speed: () => player.speed,
  follow: () => followedSlot(),
  seek: (tick) => seekTo(tick),
};
window.matchreplayViewer = hook;
const log = (type, detail = {}) => {
  hook.events.push({ type, at: performance.now(), ...detail });
  if (hook.events.length > LOG_LIMIT) hook.events.splice(0, hook.events.length - LOG_LIMIT);
};

// -- errors as a person expects them ------------------------------------------------------
function banner(text, kind = "error", html = null) {
  const el = $("#banner");
  if (text === null && html === null) { el.hidden = true; return; }
  el.className = kind;
  if (html) el.innerHTML = html; else el.textContent = text;
  el.hidden = false;
}

function showError(exc) {
  log("error", { kind: exc.kind ?? "bug", code: exc.code ?? null, message: exc.message });
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  if (exc.kind === "not_found") {
    banner(null, "error", `Match <b>${esc(params.get("match"))}</b> does not exist on this server. <a href="/">See all matches</a>.`);
  } else if (exc.kind === "unauthorized") {
    banner(`The server refused the token: ${exc.message}. Open the viewer without a token to watch public matches, or ask for a new token.`);
  } else if (exc.kind === "forbidden") {
    banner(`You may not watch this match: ${exc.message}.`);
  } else {
    banner(`Something went wrong: ${exc.message}`);
  }
}

function onStatus(status) {
  if (status.kind === "lost") {
    log("connection_lost", { attempt: status.attempt });
    banner(`Connection to the server lost — reconnecting (attempt ${status.attempt}, next in ${(status.delay / 1000).toFixed(1)} s)…`, "warn");
  } else if (status.kind === "ok") {
    log("reconnected");
    banner(null);
  }
}

// -- home: match list and leaderboards ---------------------------------------------------
async function home() {
  hook.view = "list";
  $("#home").hidden = false;
  $("#title").textContent = "Matches";
  const tick = async () => {
    try {
      const boards = await renderMatches();
      await renderLeaderboards(boards);
      banner(null);
    } catch (exc) {
      if (exc.retryable) onStatus({ kind: "lost", attempt: 1, delay: LIST_POLL_MS, message: exc.message });
      else showError(exc);
    }
  };
  await tick();
  log("list_loaded");
  resolveReady(hook);
  setInterval(tick, LIST_POLL_MS);
}

async function renderMatches() {
  const { matches, leaderboards } = await api.matches();
  // Live matches first (they are what a caster opens), then newest first as listed.
  const live = (m) => (m.status === "running" || m.status === "created" ? 0 : 1);
  matches.sort((a, b) => live(a) - live(b));
  const rows = matches.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.match = m.match_id;
    const standings = m.standings ?? [];
    const cells = [
      m.match_id,
      m.status,
      standings.length ? standings.map((s) => s.name).join(", ") : m.players.join(", "),
      standings.slice(0, 3).map((s) => `${s.name} ${s.score}`).join(" · "),
      clock(m.tick, m.tick_rate),
    ];
    for (const [i, text] of cells.entries()) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = ["id", "status", "players", "score", "duration"][i];
      tr.append(td);
    }
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = `/?match=${encodeURIComponent(m.match_id)}${api.token ? `&token=${encodeURIComponent(api.token)}` : ""}`;
    a.textContent = live(m) === 0 ? "Watch live" : "Replay";
    td.append(a);
    tr.append(td);
    return tr;
  });
  $("#match-list tbody").replaceChildren(...rows);
  $("#match-list-empty").hidden = rows.length > 0;
  return leaderboards;
}

async function renderLeaderboards(available) {
  const root = $("#leaderboards");
  if (!available) {
    root.textContent = "Leaderboards are not enabled on this server.";
    root.dataset.state = "unavailable";
    return;
  }
  const { boards } = await api.leaderboards();
  const sections = await Promise.all(boards.map(async (b) => {
    const top = await api.board(b.id, 10);
    const div = document.createElement("div");
    div.className = "board";
    div.dataset.board = b.id;
    const h = document.createElement("h3");
    h.textContent = b.title ?? b.id;
    const table = document.createElement("table");
    for (const e of top.entries) {
      const tr = table.insertRow();
      for (const v of [e.rank, e.owner, e.value]) tr.insertCell().textContent = String(v);
    }
    div.append(h, table);
    return div;
  }));
  root.replaceChildren(...sections);
  if (!sections.length) root.textContent = "No leaderboards configured.";
  root.dataset.state = "loaded";
}

// -- the match view ------------------------------------------------------------------------
let session = null;
let renderer = null;
let timeline = null;
let controls = null;
const player = {
  playing: false, speed: 1, pos: 0, liveFollow: false, seeking: false,
  followId: params.get("follow"), clip: null, lastUrlUpdate: 0, lastTick: -1,
};

function followedSlot() {
  const s = session?.state;
  if (!s || !player.followId) return null;
  const slot = s.players.indexOf(player.followId);
  return slot >= 0 ? slot : null;
}

function updateUrl(force = false) {
  const now = performance.now();
  if (!force && now - player.lastUrlUpdate < URL_UPDATE_MS) return;
  player.lastUrlUpdate = now;
  const q = new URLSearchParams();
  q.set("match", session.matchId);
  if (!player.liveFollow) q.set("tick", String(session.tick));
  if (player.followId) q.set("follow", player.followId);
  if (api.token) q.set("token", api.token);
  history.replaceState(null, "", `/?${q}`);
}

async function seekTo(tick, { pause = true } = {}) {
  if (!session?.meta) return;
  if (pause) setPlaying(false);
  player.clip = pause ? null : player.clip;
  player.seeking = true;
  try {
    if (await session.seek(tick)) {
      player.pos = session.tick + 1;  // alpha 1: the exact viewed tick
      log("seek", { tick: session.tick });
      updateUrl(true);
    }
  } catch (exc) {
    showError(exc);
  } finally {
    player.seeking = false;
  }
}

function setPlaying(playing) {
  if (playing && !player.liveFollow && session.tick >= session.liveEdge && !session.live) {
    playing = false;  // at the end of a finished match there is nothing to play
  }
  player.playing = playing;
  if (playing) frame.last = performance.now();  // play time starts now, not at the last frame
  if (!playing) player.liveFollow = false;
  controls?.setPlaying(playing);
  log(playing ? "play" : "pause", { tick: session?.tick });
  updateUrl(true);
}

const actions = {
  togglePlay: () => setPlaying(!player.playing),
  step: (n) => seekTo(session.tick + n),
  seekSeconds: (s) => seekTo(session.tick + Math.round(s * session.meta.tick_rate), { pause: !player.playing }),
  setSpeed: (s) => {
    player.speed = s;
    controls.setSpeed(s);
    log("speed", { speed: s });
  },
  speedBy: (d) => {
    const i = SPEEDS.indexOf(player.speed);
    actions.setSpeed(SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, i + d))]);
  },
  goLive: async () => {
    if (!session.live) { await seekTo(session.liveEdge); return; }
    await seekTo(session.liveEdge);
    player.liveFollow = true;
    player.playing = true;
    actions.setSpeed(1);
    controls.setPlaying(true);
    log("live", { tick: session.tick });
    updateUrl(true);
  },
  clip: async () => {
    const kill = timeline.lastKill(session.tick);
    if (!kill) { banner("No kill before this moment to clip.", "warn"); return; }
    try {
      const c = await api.clip(session.matchId, kill.tick);
      player.followId = c.follow_player;
      await seekTo(c.from_tick);
      player.clip = c;
      setPlaying(true);
      log("clip", c);
    } catch (exc) {
      showError(exc);
    }
  },
  follow: (id) => {
    player.followId = id;
    log("follow", { player: id });
    updateUrl(true);
  },
  followNext: () => {
    const rows = scoreboard(session.state);
    if (!rows.length) return;
    const i = rows.findIndex((r) => r.player === player.followId);
    actions.follow(rows[(i + 1) % rows.length].player);
  },
};

function renderScoreboard() {
  const s = session.state;
  const followed = followedSlot();
  const rows = scoreboard(s).map((r, i) => {
    const tr = document.createElement("tr");
    tr.dataset.player = r.player;
    if (r.slot === followed) tr.className = "followed";
    for (const v of [i + 1, r.name, r.kills, r.deaths, r.score]) tr.insertCell().textContent = String(v);
    if (!r.alive) tr.cells[1].className = "dead";
    tr.addEventListener("click", () => actions.follow(r.player === player.followId ? null : r.player));
    return tr;
  });
  $("#scoreboard tbody").replaceChildren(...rows);
  $("#score-tick").textContent = `tick ${s.tick}`;
  $("#following").textContent = followed !== null ? `Following ${s.names[followed]}` : "";
}

function renderStatus() {
  const m = session.meta, el = $("#live-status");
  el.hidden = false;
  if (!m.live) {
    el.className = "badge";
    el.textContent = `Replay · ${m.status}`;
  } else if (player.liveFollow) {
    el.className = "badge live";
    el.textContent = `● LIVE · ${m.delay_s.toFixed(1)} s delay`;
  } else {
    el.className = "badge behind";
    el.textContent = `Live match · ${((session.liveEdge - session.tick) / m.tick_rate).toFixed(1)} s behind the live edge (${m.delay_s.toFixed(1)} s delay)`;
  }
  el.dataset.live = String(player.liveFollow);
  const rate = m.tick_rate;
  $("#clock").textContent = `${clock(session.tick, rate)} / ${clock(session.liveEdge, rate)} · tick ${session.tick}`;
}

function frame(now) {
  // Clamped: a hidden tab resumes calmly, and a frame stamped before the play click
  // (setPlaying restarts the clock) must not count the time before it.
  const dt = Math.max(0, Math.min(0.25, (now - (frame.last ?? now)) / 1000));
  frame.last = Math.max(now, frame.last ?? now);
  const rate = session.meta.tick_rate;
  if (player.liveFollow && !session.live) player.liveFollow = false;  // it ended: play out
  if (player.playing && !player.seeking) {
    if (player.liveFollow && session.liveEdge - session.tick > 2 * rate) {
      seekTo(session.liveEdge, { pause: false });  // fell behind the live edge: catch up
    } else {
      player.pos += dt * rate * player.speed;
      const stop = player.clip ? player.clip.to_tick : session.liveEdge;
      player.pos = Math.min(player.pos, stop + 1);
      while (player.pos > session.tick + 1 && session.tick < stop) {
        if (!session.stepForward()) { player.pos = session.tick + 1; break; }  // buffering
      }
      if (session.tick >= stop && !player.liveFollow && (player.clip || !session.live)) {
        player.pos = session.tick + 1;
        setPlaying(false);
      }
    }
    const ahead = session.tick + CHUNK_TICKS / 2;
    if (!session.loaded(Math.min(ahead, session.liveEdge))) {
      session.ensureEvents(session.tick + 1, ahead).catch(showError);
    }
  }
  const alpha = player.playing ? Math.max(0, Math.min(1, player.pos - session.tick)) : 1;
  const effects = [];
  for (let t = Math.max(0, session.tick - EFFECT_TICKS); t <= session.tick; t++) {
    const events = session.eventsAt(t);
    if (events.length) effects.push({ tick: t, events });
  }
  renderer.draw({ state: session.state, prev: session.prev, alpha, follow: followedSlot(), effects, tickRate: rate });
  timeline.setRange(session.liveEdge);
  timeline.setTick(session.tick);
  if (session.tick !== player.lastTick) {
    player.lastTick = session.tick;
    renderScoreboard();
    if (player.playing) updateUrl();
  }
  renderStatus();
  requestAnimationFrame(frame);
}

async function refreshMarkers() {
  const { markers } = await session.retry(() => api.markers(session.matchId));
  timeline.setMarkers(markers, session.meta.tick_rate);
  hook.markers = markers;
}

async function matchView(matchId) {
  hook.view = "match";
  $("#match").hidden = false;
  $("#title").textContent = matchId;
  document.title = `${matchId} · matchreplay viewer`;
  renderer = new Renderer($("#arena"));
  timeline = new Timeline($("#timeline"), { onSeek: (t) => seekTo(t) });
  controls = bindControls($("#match"), actions);
  session = new ReplaySession(api, matchId, { onStatus, onMeta: (m) => log("meta", { live_edge: m.live_edge, status: m.status }) });
  try {
    const meta = await session.open();
    const asked = params.get("tick");
    if (asked !== null && Number.isInteger(Number(asked))) {
      await seekTo(Number(asked));
    } else if (meta.live) {
      await actions.goLive();
    } else {
      await seekTo(0);
    }
    const speed = Number(params.get("speed"));
    if (SPEEDS.includes(speed)) actions.setSpeed(speed);
    await refreshMarkers();
  } catch (exc) {
    showError(exc);
    resolveReady(hook);
    return;
  }
  requestAnimationFrame((now) => {
    frame(now);
    log("ready", { tick: session.tick });
    resolveReady(hook);
  });
  if (session.live) {
    const poll = async () => {
      try {
        await session.pollLive();
      } catch (exc) { showError(exc); }
      if (session.live) setTimeout(poll, LIVE_POLL_MS);
      else log("ended", { tick: session.liveEdge });
    };
    setTimeout(poll, LIVE_POLL_MS);
    const markers = async () => {
      await refreshMarkers().catch(showError);
      if (session.live) setTimeout(markers, MARKERS_POLL_MS);
      else await refreshMarkers().catch(showError);
    };
    setTimeout(markers, MARKERS_POLL_MS);
  }
}

window.addEventListener("error", (ev) => log("error", { kind: "bug", message: ev.message }));
const matchId = params.get("match");
if (matchId) matchView(matchId); else home();
