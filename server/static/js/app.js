// The viewer page: the home view (match list, leaderboards) or the match view (canvas,
// timeline, controls, scoreboard), chosen by the URL. Deep link (docs/viewer.md):
//   /?match=ID&tick=T&follow=PLAYER[&token=JWT]
// opens match ID paused at tick T following PLAYER; without `tick` it opens a live
// match at its live edge and a finished one at the start.
//
// The home view reads the match list and leaderboards over HTTP (api.js); the match view
// is one websocket spectator session (spectator.js): the server paces playback and pushes
// live frames, the page folds them and draws.
import { Api } from "./api.js";
import { plainState, scoreboard } from "/static/games/arena/viewer.js";
import { bindControls, SPEEDS } from "./controls.js";
import { Renderer } from "./renderer.js";
import { SpectatorSession, websocketUrl, CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER } from "./spectator.js";
import { Timeline, clock } from "./timeline.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const api = new Api(params.get("token"));
const MARKERS_POLL_MS = 3000;  // new markers of a live match
const EDGE_POLL_MS = 2000;     // the live edge while not following it (LIST)
const LIST_POLL_MS = 5000;
const URL_UPDATE_MS = 1000;
const SKIPPED_NOTICE_MS = 3000;
const LOG_LIMIT = 500;

// -- the documented test hook (docs/viewer.md, "Test hook") -----------------------------
let resolveReady;
const hook = {
  view: null,
  ready: new Promise((r) => (resolveReady = r)),
  events: [],
  transport: "websocket",
  state: () => (session?.state ? plainState(session.state) : null),
  tick: () => session?.tick ?? null,
  edge: () => session?.edge ?? null,
  frames: () => renderer?.frames ?? 0,
  playing: () => player.mode !== "paused",
  live: () => player.mode === "live",
  speed: () => player.speed,
  follow: () => followedSlot(),
  seek: (tick) => seekTo(tick),
  connected: () => !!session?.connected,
  messages: () => ({ received: { ...session?.received }, sent: { ...session?.sent } }),
  busy: () => !!session && (session.pending.length > 0 || !!seeking || player.clipEnding),
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
  if (exc.code === "connection_lost") return;  // the session reconnects and says so
  const kind = exc.kind ?? exc.code ?? "bug";
  log("error", { kind, code: exc.code ?? null, message: exc.message });
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const id = params.get("match");
  if (kind === "not_found" || kind === "unknown_match") {
    banner(null, "error", `Match <b>${esc(id)}</b> does not exist on this server. <a href="/">See all matches</a>.`);
  } else if (kind === "unauthorized") {
    banner(`The server refused the token: ${exc.message}. Open the viewer without a token to watch public matches, or ask for a new token.`);
  } else if (kind === "forbidden" && !api.token) {
    // Without a token the server does not say whether a private match exists.
    banner(null, "error", `Match <b>${esc(id)}</b> does not exist on this server or is not public: open it with a spectator token (?token=...). <a href="/">See all matches</a>.`);
  } else if (kind === "forbidden") {
    banner(`You may not watch this match: ${exc.message}.`);
  } else if (kind === "unknown_marker") {
    banner(`No kill to clip here: ${exc.message}.`, "warn");
  } else {
    banner(`Something went wrong: ${exc.message}`);
  }
}

const LOST_REASONS = {
  [CLOSE_GOING_AWAY]: "The server is restarting",
  [CLOSE_SLOW_CONSUMER]: "The server dropped this viewer for reading too slowly",
};

function onStatus(status) {
  if (status.kind === "lost") {
    log("connection_lost", { attempt: status.attempt, code: status.code });
    const why = LOST_REASONS[status.code] ?? "Connection to the server lost";
    banner(`${why} — reconnecting (attempt ${status.attempt}, next in ${(status.delay / 1000).toFixed(1)} s)…`, "warn");
  } else if (status.kind === "ok") {
    log("reconnected", { tick: session?.tick });
    banner(null);
    refreshMarkers(true).catch(showError);
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
      if (exc.retryable) {
        log("connection_lost", { attempt: 1 });
        banner(`Connection to the server lost — reconnecting (next in ${LIST_POLL_MS / 1000} s)…`, "warn");
      } else {
        showError(exc);
      }
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
let seeking = null;       // the running seek loop (seeks are coalesced: only the newest runs)
let seekTarget = null;
// mode: what the page shows ("live", "replay" = playing, "paused"). A control sets it at
// once (the page answers keys without waiting); the server's PLAYBACK that answers the
// last control sent, or an unasked one, then has the final word.
const player = {
  mode: "paused", speed: 1, followId: params.get("follow"), clip: null, clipEnding: false,
  lastUrlUpdate: 0, lastTick: -1, playingShown: null, skippedUntil: 0,
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
  if (player.mode !== "live") q.set("tick", String(session.tick));
  if (player.followId) q.set("follow", player.followId);
  if (api.token) q.set("token", api.token);
  history.replaceState(null, "", `/?${q}`);
}

/** Show exactly `tick` (the server clamps it to the edge). Returns once it is shown. */
function seekTo(tick, { pause = true } = {}) {
  if (!session?.info) return Promise.resolve();
  if (pause) player.clip = null;
  seekTarget = { tick: Math.max(0, Math.round(tick)), pause };
  seeking ??= (async () => {
    await null;  // `seeking` is assigned before the loop can finish and clear it
    try {
      while (seekTarget) {
        const target = seekTarget;
        seekTarget = null;
        // A drag ends with the tick it already shows ("change" after the last "input").
        const still = player.mode === "paused" && session.mode === "paused" && !session.pending.length;
        if (still && target.tick === session.tick) continue;
        // SEEK keeps a playing replay playing; a pause goes first when the viewer asked one.
        if (target.pause && (player.mode !== "paused" || session.mode !== "paused")) {
          session.pause().catch(() => {});
        }
        if (target.pause) player.mode = "paused";
        const pb = await session.seek(target.tick);
        log("seek", { tick: pb.tick });
        updateUrl(true);
      }
      if (!session.pending.length) player.mode = session.mode;
    } catch (exc) {
      showError(exc);
    } finally {
      seeking = null;
    }
  })();
  return seeking;
}

function setPlaying(playing) {
  if (playing) {
    if (!session.live && session.tick >= session.edge) return;  // the end: nothing to play
    player.mode = "replay";
    log("play", { tick: session.tick });
    session.play(player.speed).catch(showError);
  } else {
    player.mode = "paused";
    player.clip = null;
    session.pause().then((pb) => {
      log("pause", { tick: pb.tick });
      updateUrl(true);
    }, showError);
  }
  updateUrl(true);
}

const actions = {
  togglePlay: () => setPlaying(player.mode === "paused"),
  step: (n) => {
    player.mode = "paused";
    player.clip = null;
    session.step(n).then((pb) => {
      log("seek", { tick: pb.tick });
      updateUrl(true);
    }, showError);
  },
  seekSeconds: async (s) => {
    const keepPlaying = player.mode !== "paused";
    await seekTo(session.tick + Math.round(s * session.info.tick_rate), { pause: !keepPlaying });
    if (keepPlaying && session.mode === "paused") setPlaying(true);  // a seek from live pauses
  },
  setSpeed: (s) => {
    player.speed = s;
    controls.setSpeed(s);
    log("speed", { speed: s });
    if (player.mode === "replay") session.play(s).catch(showError);
  },
  speedBy: (d) => {
    const i = SPEEDS.indexOf(player.speed);
    actions.setSpeed(SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, i + d))]);
  },
  goLive: async () => {
    player.clip = null;
    if (session.live) player.mode = "live";
    player.speed = 1;
    controls.setSpeed(1);
    try {
      const pb = await session.goLive();
      if (pb.mode === "live") log("live", { tick: pb.tick });
      updateUrl(true);
    } catch (exc) {
      showError(exc);
    }
  },
  clip: async () => {
    const kill = timeline.lastKill(session.tick);
    if (!kill) { banner("No kill before this moment to clip.", "warn"); return; }
    try {
      const c = await session.clip(kill.tick, 5);
      player.followId = c.follow_player;
      await seekTo(c.from_tick);
      player.clip = c;
      player.clipEnding = false;
      log("clip", c);
      setPlaying(true);
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

/** A clip stops at its kill: pause, then (if frames already went past it) seek back. */
function onFrame(tick) {
  const c = player.clip;
  if (!c || player.clipEnding || tick < c.to_tick) return;
  player.clipEnding = true;
  session.pause()
    .then((pb) => (pb.tick === c.to_tick ? pb : session.seek(c.to_tick)))
    .then((pb) => {
      player.clip = null;
      player.clipEnding = false;
      player.mode = pb.mode;
      log("pause", { tick: pb.tick });
      updateUrl(true);
    }, showError);
}

function onPlayback(pb, answered) {
  // Only the answer to the last control sent (or an unasked one) is the current mode.
  if (session.pending.length === 0 && !seeking && !player.clipEnding) player.mode = pb.mode;
  if (!answered) log(pb.mode === "live" ? "live" : "pause", { tick: pb.tick });
}

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
  const info = session.info, el = $("#live-status");
  const rate = info.tick_rate, delay = info.spectator_delay;
  el.hidden = false;
  if (!session.live) {
    el.className = "badge";
    el.textContent = `Replay · ${info.status}`;
  } else if (player.mode === "live") {
    el.className = "badge live";
    el.textContent = `● LIVE · ${delay.toFixed(1)} s delay`;
  } else {
    el.className = "badge behind";
    el.textContent = `Live match · ${(Math.max(0, session.edge - session.tick) / rate).toFixed(1)} s behind the live edge (${delay.toFixed(1)} s delay)`;
  }
  el.dataset.live = String(player.mode === "live");
  $("#clock").textContent = `${clock(session.tick, rate)} / ${clock(session.edge, rate)} · tick ${session.tick}`;
  const playing = player.mode !== "paused";
  if (playing !== player.playingShown) {
    player.playingShown = playing;
    controls.setPlaying(playing);
  }
}

function frame(now) {
  const s = session.state;
  if (s) {
    // Interpolate from the tick before towards the shown one over the time the server
    // takes to send the next tick (its pace: tick rate x speed; 1x live).
    let alpha = 1;
    const prev = session.prev;
    if (player.mode !== "paused" && prev) {
      const speed = player.mode === "live" ? 1 : session.playback?.speed ?? player.speed;
      const span = ((s.tick - prev.tick) * 1000) / (session.info.tick_rate * speed);
      alpha = Math.max(0, Math.min(1, (now - session.changedAt) / span));
    }
    renderer.draw({ state: s, prev, alpha, follow: followedSlot(), effects: session.recent, tickRate: session.info.tick_rate });
    timeline.setRange(session.edge);
    timeline.setTick(s.tick);
    if (s.tick !== player.lastTick) {
      player.lastTick = s.tick;
      renderScoreboard();
      if (player.mode !== "paused") updateUrl();
    }
    renderStatus();
    if (player.skippedUntil && now > player.skippedUntil) {
      player.skippedUntil = 0;
      banner(null);
    }
  }
  requestAnimationFrame(frame);
}

/** Markers up to the edge; `all` = false asks only for those after the last one known
 * (the server answers every marker up to its edge, so none is missed or doubled). */
async function refreshMarkers(all = false) {
  const known = all ? [] : hook.markers ?? [];
  const from = known.length ? known.at(-1).tick + 1 : 0;
  const found = await session.markers(from, null);
  const markers = known.concat(found);
  timeline.setMarkers(markers, session.info.tick_rate);
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
  session = new SpectatorSession(websocketUrl(api.token), matchId, {
    status: onStatus,
    playback: onPlayback,
    frame: onFrame,
    skipped: ({ from, to, reason }) => {
      log("skipped", { from, to, reason });
      banner(`This viewer fell behind (${reason}): skipped ticks ${from}–${to - 1} to catch up.`, "warn");
      player.skippedUntil = performance.now() + SKIPPED_NOTICE_MS;
    },
    ended: (e) => {
      log("ended", { tick: e.tick, status: e.status });
      if (player.mode === "live") player.mode = "paused";
      refreshMarkers(true).catch(showError);
    },
    error: showError,
  });
  const asked = params.get("tick");
  const tick = asked !== null && Number.isInteger(Number(asked)) ? Math.max(0, Number(asked)) : null;
  try {
    const pb = await session.open(tick ?? "live");
    player.mode = pb.mode;
    log("meta", { live_edge: session.edge, status: session.info.status });
    if (tick === null && !session.live) {
      await seekTo(0);  // a finished match opens at its start
    } else if (tick !== null) {
      log("seek", { tick: pb.tick });
    } else if (pb.mode === "live") {
      log("live", { tick: pb.tick });
    }
    const speed = Number(params.get("speed"));
    if (SPEEDS.includes(speed)) actions.setSpeed(speed);
    await refreshMarkers(true);
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
  // Live frames are pushed by the server; only markers and (when not following) the
  // live edge are asked for while the match is live.
  setInterval(() => {
    if (session.live && session.connected) refreshMarkers().catch(showError);
  }, MARKERS_POLL_MS);
  setInterval(() => {
    if (session.live && session.connected && player.mode !== "live") session.refreshEdge().catch(showError);
  }, EDGE_POLL_MS);
}

window.addEventListener("error", (ev) => log("error", { kind: "bug", message: ev.message }));
const matchId = params.get("match");
if (matchId) matchView(matchId); else home();
