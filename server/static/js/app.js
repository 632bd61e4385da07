// The viewer page: the home view (match list, leaderboards) or the match view (canvas,
// timeline, controls, scoreboard), chosen by the URL. Deep link (docs/viewer.md):
//   /?match=ID&tick=T&follow=PLAYER[&token=JWT]
// opens match ID paused at tick T following PLAYER; without `tick` it opens a live
// match at its live edge and a finished one at its last tick, where the result is shown
// (or, if nobody is on the field there, at its last kill).
//
// The home view reads the match list and leaderboards over HTTP (api.js); the match view
// is one websocket spectator session (spectator.js): the server paces playback and pushes
// live frames, the page folds them and draws.
import { Api } from "./api.js";
import { anyoneOnField, plainState, result, scoreboard } from "/static/games/arena/viewer.js";
import { bindControls, SPEEDS } from "./controls.js";
import { Renderer, slotColor } from "./renderer.js";
import { SpectatorSession, websocketUrl, CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER } from "./spectator.js";
import { Timeline, abandonedAt, abandonedRanges, clock, renderLegend } from "./timeline.js";

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
  result: () => (session?.state ? result(session.state) : null),
  // Where each drawn player's dot is on the canvas: {slot: [x, y, radius]} in canvas pixels.
  dots: () => Object.fromEntries(renderer?.dots ?? []),
  // Rewinds: the abandoned branches [[lo, hi], ...] (ticks lo+1..hi-1), whether the shown
  // tick is on one; forks: {parent, forks} as GET /api/viewer/matches/{id}/lineage says.
  abandonedRanges: () => timeline?.ranges ?? [],
  abandoned: () => !!(session?.state && timeline && abandonedAt(timeline.ranges, session.tick)),
  lineage: null,
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
    missing(`Match “${id}” does not exist on this server.`);
  } else if (kind === "unauthorized") {
    banner(`The server refused the token: ${exc.message}. Open the viewer without a token to watch public matches, or ask for a new token.`);
  } else if (kind === "forbidden" && !api.token) {
    // Without a token the server does not say whether a private match exists.
    banner(null, "error", `Match <b>${esc(id)}</b> does not exist on this server or is not public: open it with a spectator token (?token=...). <a href="/">See all matches</a>.`);
    missing(`Match “${id}” does not exist or is not public.`);
  } else if (kind === "forbidden") {
    banner(`You may not watch this match: ${exc.message}.`);
  } else if (kind === "unknown_marker") {
    banner(`No kill to clip here: ${exc.message}.`, "warn");
  } else {
    banner(`Something went wrong: ${exc.message}`);
  }
}

/** The match cannot be shown: no empty arena and controls, a message instead. */
function missing(text) {
  if (hook.view !== "match" || session?.state || !$("#missing").hidden) return;
  $("#match").hidden = true;
  $("#missing-text").textContent = text;
  $("#missing").hidden = false;
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

/** "6 Dec 10:03 UTC" (UTC: the server's clock and the leaderboards' periods are UTC). */
export function when(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const month = d.toLocaleString("en-GB", { month: "short", timeZone: "UTC" });
  const hm = `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
  return `${d.getUTCDate()} ${month} ${hm} UTC`;
}

/** At most LIST_NAMES names, then how many more: a 64-player match is one line. */
const LIST_NAMES = 8;
function listNames(names) {
  if (names.length <= LIST_NAMES) return names.join(", ");
  return `${names.slice(0, LIST_NAMES).join(", ")} and ${names.length - LIST_NAMES} more`;
}

/** Display names by player id, from every listed match (the game's names). */
const knownNames = new Map();

async function renderMatches() {
  const { matches, leaderboards } = await api.matches();
  // Live matches first (they are what a caster opens), then newest first as listed.
  const live = (m) => (m.status === "running" || m.status === "created" ? 0 : 1);
  matches.sort((a, b) => live(a) - live(b));
  const rows = matches.map((m) => {
    const name = (player) => m.names?.[player] ?? player;
    for (const p of m.players) knownNames.set(p, name(p));
    const tr = document.createElement("tr");
    tr.dataset.match = m.match_id;
    const standings = m.standings ?? [];
    const match = document.createElement("td");
    match.className = "match";
    const title = document.createElement("b");
    title.textContent = `${m.game} · ${m.players.length} player${m.players.length === 1 ? "" : "s"}`;
    const started = document.createElement("span");
    started.className = "started";
    started.textContent = `created ${when(m.created_at)}`;
    const id = document.createElement("small");
    id.className = "id";
    id.textContent = m.match_id;
    match.append(title, document.createElement("br"), started, " ", id);
    tr.append(match);
    const cells = [
      m.status,
      listNames(m.players.map(name)),
      standings.slice(0, 3).map((s) => `${s.name} ${s.score}`).join(" · "),
      clock(m.tick, m.tick_rate),
    ];
    for (const [i, text] of cells.entries()) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = ["status", "players", "score", "duration"][i];
      tr.append(td);
    }
    tr.querySelector(".players").title = m.players.map(name).join(", ");  // all of them
    if (m.result) {  // how it ended, under its status
      const r = document.createElement("small");
      r.className = "result";
      r.textContent = `${m.result.winner ? `${m.result.winner_name} won` : "no winner"} · ${reasonText(m.result.reason)}`;
      tr.querySelector(".status").append(document.createElement("br"), r);
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

/** What a board's current period is, in words: "all time", "week 49 of 2026 (30 Nov – 6 Dec, UTC)". */
export function periodText(board) {
  const key = board.current_period ?? "all";
  const day = (d) => `${d.getUTCDate()} ${d.toLocaleString("en-GB", { month: "short", timeZone: "UTC" })}`;
  let m;
  if (board.reset === "none" || key === "all") return "all time";
  if (board.reset === "daily" && (m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(key))) {
    return `${day(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])))} ${m[1]} (UTC day)`;
  }
  if (board.reset === "weekly" && (m = /^(\d{4})-W(\d{2})$/.exec(key))) {
    // ISO week: week 1 holds the year's first Thursday; weeks start on Monday.
    const jan4 = new Date(Date.UTC(+m[1], 0, 4));
    const monday = new Date(jan4.getTime() - ((jan4.getUTCDay() + 6) % 7) * 86400e3 + (+m[2] - 1) * 7 * 86400e3);
    const sunday = new Date(monday.getTime() + 6 * 86400e3);
    return `week ${+m[2]} of ${m[1]} (${day(monday)} – ${day(sunday)}, UTC)`;
  }
  if (board.reset === "monthly" && (m = /^(\d{4})-(\d{2})$/.exec(key))) {
    return new Date(Date.UTC(+m[1], +m[2] - 1, 1)).toLocaleString("en-GB", { month: "long", year: "numeric", timeZone: "UTC" });
  }
  return key;
}

let shownBoard = null;  // the board tab a person picked (kept across refreshes)

async function renderLeaderboards(available) {
  const root = $("#leaderboards");
  if (!available) {
    root.textContent = "Leaderboards are not enabled on this server.";
    root.dataset.state = "unavailable";
    return;
  }
  const { boards } = await api.leaderboards();
  if (!boards.length) {
    root.textContent = "No leaderboards configured.";
    root.dataset.state = "loaded";
    return;
  }
  // One board at a time behind tabs: five full tables stacked are a page of scrolling.
  if (!boards.some((b) => b.id === shownBoard)) shownBoard = boards[0].id;
  const tabs = document.createElement("div");
  tabs.className = "tabs";
  tabs.setAttribute("role", "tablist");
  const sections = await Promise.all(boards.map(async (b) => {
    const tab = document.createElement("button");
    tab.setAttribute("role", "tab");
    tab.dataset.board = b.id;
    tab.textContent = b.title ?? b.id;
    tab.setAttribute("aria-selected", String(b.id === shownBoard));
    tab.addEventListener("click", () => {
      shownBoard = b.id;
      for (const t of tabs.children) t.setAttribute("aria-selected", String(t.dataset.board === b.id));
      for (const d of root.querySelectorAll(".board")) d.hidden = d.dataset.board !== b.id;
    });
    tabs.append(tab);  // in the boards' order, before the answers come back in any order
    const top = await api.board(b.id, 10);
    const div = document.createElement("div");
    div.className = "board";
    div.dataset.board = b.id;
    div.setAttribute("role", "tabpanel");
    div.hidden = b.id !== shownBoard;
    const h = document.createElement("h3");
    h.textContent = b.title ?? b.id;
    const period = document.createElement("p");
    period.className = "period";
    period.textContent = periodText(b);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const text of ["Rank", "Player", valueLabel(b)]) {
      const th = document.createElement("th");
      th.textContent = text;
      head.append(th);
    }
    const body = table.createTBody();
    for (const e of top.entries) {
      const tr = body.insertRow();
      tr.insertCell().textContent = String(e.rank);
      const who = tr.insertCell();
      if (e.owner === null) {
        // A private match's player, not named to a page without a token (docs/leaderboards.md).
        who.textContent = "(private)";
        who.className = "private";
      } else {
        who.textContent = knownNames.get(e.owner) ?? e.owner;
        who.title = e.owner;
      }
      tr.insertCell().textContent = String(e.value);
    }
    if (!top.entries.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = 3;
      td.textContent = "No entries yet.";
    }
    div.append(h, period, table);
    return div;
  }));
  root.replaceChildren(tabs, ...sections);
  root.dataset.state = "loaded";
}

/** The value column's header: the board's metric in words ("match_score": "Match score"). */
function valueLabel(board) {
  const words = board.metric.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A match end reason in words (the games' reasons; others as they are). */
function reasonText(reason) {
  return { time_limit: "time limit", score_limit: "score limit" }[reason] ?? reason;
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
  lastUrlUpdate: 0, lastTick: -1, playingShown: null, skippedUntil: 0, created: null,
  showAbandoned: false, skippingTo: null,
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

/** A clip stops at its kill: pause, then (if frames already went past it) seek back.
 * Playing into ticks a rewind abandoned jumps to the rewind (the surviving timeline),
 * unless the viewer asked to see the abandoned branches. */
function onFrame(tick) {
  const branch = abandonedAt(timeline.ranges, tick);
  if (branch && player.mode === "replay" && !player.showAbandoned && player.skippingTo === null) {
    player.skippingTo = branch[1];
    log("skip_abandoned", { from: tick, to: branch[1] });
    seekTo(branch[1], { pause: false }).finally(() => { player.skippingTo = null; });
  }
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
    // The player's colour on the canvas: the legend of the dots.
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = slotColor(r.slot);
    tr.cells[1].prepend(swatch);
    if (!r.alive) tr.cells[1].className = "dead";
    tr.addEventListener("click", () => actions.follow(r.player === player.followId ? null : r.player));
    return tr;
  });
  $("#scoreboard tbody").replaceChildren(...rows);
  $("#score-tick").textContent = `tick ${s.tick}`;
  $("#following").textContent = followed !== null ? `Following ${s.names[followed]}` : "";
  renderResult();
  renderBranch();
}

/** On a tick a rewind abandoned: say so, and which rewind undid it. */
function renderBranch() {
  const el = $("#branch");
  const branch = abandonedAt(timeline.ranges, session.tick);
  el.hidden = !branch;
  if (branch) {
    const rate = session.info.tick_rate, [lo, hi] = branch;
    el.textContent = `Abandoned branch: this moment was undone by the rewind at ${clock(hi, rate)} (tick ${hi}), which went back to ${clock(lo, rate)} (tick ${lo}).`;
  }
}

/** Where a fork comes from and the forks of this match, as links (same token). */
function renderLineage(lineage) {
  const el = $("#lineage"), rate = session.info.tick_rate;
  const link = (id, tick) => {
    const a = document.createElement("a");
    const q = new URLSearchParams({ match: id, tick: String(tick) });
    if (api.token) q.set("token", api.token);
    a.href = `/?${q}`;
    a.textContent = id;
    a.dataset.match = id;
    return a;
  };
  const parts = [];
  const { parent, forks } = lineage;
  if (parent) {
    const span = document.createElement("span");
    span.className = "parent";
    span.append("Forked from ", parent.match_id ? link(parent.match_id, parent.tick) : "a match you may not watch",
      ` at ${clock(parent.tick, rate)} (tick ${parent.tick}).`);
    parts.push(span);
  }
  if (forks.length) {
    const span = document.createElement("span");
    span.className = "forks";
    span.append(`Forks (${forks.length}): `);
    forks.forEach((f, i) => span.append(i ? ", " : "", link(f.match_id, f.tick), ` at ${clock(f.tick, rate)}`));
    parts.push(span);
  }
  el.replaceChildren(...parts.flatMap((p, i) => (i ? [" ", p] : [p])));
  el.hidden = !parts.length;
}

/** The result once the match is over at the shown tick (winner and why), or that the
 * server stopped it. */
function renderResult() {
  const el = $("#result");
  const r = result(session.state);
  const interrupted = session.info.status === "interrupted" && session.tick >= session.edge;
  el.hidden = !r && !interrupted;
  if (r) {
    el.dataset.winner = r.winner;
    el.textContent = `Match over: ${r.winner ? `${r.winner_name} wins` : "no winner"} (${reasonText(r.reason)}).`;
  } else if (interrupted) {
    el.dataset.winner = "";
    el.textContent = "Match interrupted: the server stopped before it ended. This is its last recorded moment.";
  }
}

/** The header: the match's game, players (display names) and creation time, not its id. */
function renderTitle(created) {
  const names = new Map();
  for (const m of hook.markers ?? []) if (m.kind === "joined") names.set(m.data.player, m.data.name ?? m.data.player);
  const players = listNames([...names.values()]);
  const parts = [session.info.game, players || "no players yet"];
  if (created) parts.push(`created ${when(created)}`);
  $("#title").textContent = parts.join(" · ");
  $("#title").title = session.matchId;
  document.title = `${parts.slice(0, 2).join(" · ")} · matchreplay viewer`;
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
  $("#live").hidden = !session.live;  // a finished match has no live edge to jump to
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
  const found = await session.markers(from, null, player.showAbandoned);
  // A new rewind abandons markers already known: read them all again, flagged anew.
  if (!all && found.some((m) => m.kind === "rewound")) return refreshMarkers(true);
  const markers = known.concat(found);
  const ranges = abandonedRanges(markers, session.edge);
  timeline.setMarkers(markers, session.info.tick_rate, ranges);
  $("#abandoned-toggle").hidden = !ranges.length;
  const roster = (list) => list.filter((m) => m.kind === "joined").length;
  const changed = roster(markers) !== roster(hook.markers ?? []);
  hook.markers = markers;
  if (changed) renderTitle(player.created);
}

async function matchView(matchId) {
  hook.view = "match";
  $("#title").textContent = matchId;
  document.title = `${matchId} · matchreplay viewer`;
  renderLegend($("#legend"));
  renderer = new Renderer($("#arena"));
  timeline = new Timeline($("#timeline"), { onSeek: (t) => seekTo(t) });
  controls = bindControls($("#match"), actions);
  $("#show-abandoned").addEventListener("change", (ev) => {
    player.showAbandoned = ev.target.checked;
    log("show_abandoned", { on: player.showAbandoned });
    refreshMarkers(true).then(() => log("markers", { count: hook.markers.length }), showError);
  });
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
    // The arena is shown once there is a match to draw (never an empty one for an error).
    $("#match").hidden = false;
    await refreshMarkers(true);
    if (tick === null && !session.live) {
      // A finished match opens where its story ends: the last tick, with the result.
      // If nobody is on the field there (all left), at its last kill instead.
      if (!anyoneOnField(session.state)) {
        const kill = timeline.lastKill(session.edge);
        if (kill) await seekTo(kill.tick);
      }
      log("seek", { tick: session.tick });
    } else if (tick !== null) {
      log("seek", { tick: pb.tick });
    } else if (pb.mode === "live") {
      log("live", { tick: pb.tick });
    }
    const speed = Number(params.get("speed"));
    if (SPEEDS.includes(speed)) actions.setSpeed(speed);
  } catch (exc) {
    showError(exc);
    missing("This match cannot be shown.");
    resolveReady(hook);
    return;
  }
  try {  // the header's creation time: nice to have, never a reason not to show the match
    player.created = (await session.describe())?.created_at ?? null;
  } catch { /* shown without it */ }
  renderTitle(player.created);
  try {  // forks and their parent: links, never a reason not to show the match
    hook.lineage = await api.lineage(matchId);
    renderLineage(hook.lineage);
  } catch (exc) {
    log("error", { kind: "lineage", message: exc.message });
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
