// The match view's one data path: a websocket spectator session of one match
// (docs/protocol.md section 11), the same message flow as client_sdk/spectator.py.
// No DOM here: it keeps the state, talks to the server and reports through callbacks;
// app.js draws and binds the controls.
//
// Invariant (protocol 11.4): after every STATE or FRAME for tick t, this.state is the
// server's ReplayEngine.state_at(match, t). A STATE replaces it (arena.js decodeKeyframe),
// a FRAME folds that tick's events into it (fold.js: the game's events, and a rewind or
// fork replacing the state, as replay/fold.py). Nothing else changes it.
//
// The server is the only judge of how far this viewer may see (Spectators.edge): the page
// never computes a live edge of its own, it only remembers the newest one the server told
// it (PLAYBACK.live_edge, WATCHING.last_tick, MATCHES tick, live frames).
import * as arena from "/static/games/arena/viewer.js";
import { foldEvents, restores } from "./fold.js";
import { decode, encode } from "./msgpack.js";

export const SUBPROTOCOL = "matchreplay.v1";
export const MSG = {
  WELCOME: 16, ERROR: 20, ENDED: 22,
  LIST: 32, WATCH: 33, SEEK: 34, PLAY: 35, PAUSE: 36, STEP: 37, LIVE: 38, MARKERS: 39,
  CLIP: 40, SCOREBOARD: 41,
  MATCHES: 64, WATCHING: 65, STATE: 66, FRAME: 67, PLAYBACK: 68, SKIPPED: 69,
  MARKERS_REPLY: 70, CLIP_REPLY: 71, SCOREBOARD_REPLY: 72,
};
const NAMES = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k]));
export const CLOSE_UNAUTHORIZED = 4001;
export const CLOSE_SLOW_CONSUMER = 4010;
export const CLOSE_GOING_AWAY = 1001;
export const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];
// A browser cannot send websocket pings, and a dropped network (not a closed socket) goes
// unnoticed for minutes: after PROBE_AFTER_MS without any message the session asks the
// server something cheap (an empty MARKERS range), and without an answer DEAD_AFTER_MS
// later it gives the socket up and reconnects.
export const PROBE_AFTER_MS = 2000;
export const DEAD_AFTER_MS = 3000;
export const RECENT_TICKS = 60;  // ticks of events kept for the renderer's effects (~60 KiB at 64 players)

/** A failed request: a server ERROR (its code), "connection_lost" or "unauthorized". */
export class SpectatorError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** The server's websocket URL for this page (same host and port), with the token. */
export function websocketUrl(token) {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  if (token) url.searchParams.set("token", token);
  return url.href;
}

export class SpectatorSession {
  /**
   * on: {status({kind: "lost"|"ok", attempt, delay, code, reason}), playback(pb, answered),
   *      frame(tick, events), reset(tick), skipped({from, to, reason}), ended(info),
   *      error(SpectatorError) for errors no request waits for}
   */
  constructor(url, matchId, on = {}) {
    this.url = url;
    this.matchId = matchId;
    this.on = on;
    this.ws = null;
    this.welcomed = false;
    this.info = null;            // WATCHING metadata
    this.state = null;           // exact state at this.state.tick
    this.prev = null;            // {x, y, tick} before the last FRAME, for interpolation
    this.changedAt = 0;          // performance.now() of the last STATE/FRAME
    this.recent = [];            // [{tick, events}] of the last RECENT_TICKS ticks
    this.playback = null;        // the last PLAYBACK {mode, speed, tick, live_edge, clamped}
    this.edge = 0;               // newest live edge the server reported
    this.ended = false;
    this.received = {};          // message counts by type name (the test hook shows them)
    this.sent = {};
    this.pending = [];           // controls awaiting their PLAYBACK, oldest first
    this.replies = new Map();    // ref -> {resolve, reject}
    this.nextRef = 1;
    this.attempt = 0;            // reconnect attempts since the last good WATCH
    this.from = "live";          // where the next WATCH starts
    this.resumePlay = null;      // speed to PLAY at after a reconnect, if it was playing
    this.closed = false;
    this.opened = null;          // the deferred of open()
    this.heardAt = 0;            // performance.now() of the last message
    this.probing = false;
    this.watchdog = null;
  }

  get tick() { return this.state ? this.state.tick : -1; }
  get mode() { return this.playback?.mode ?? "paused"; }
  get live() { return !!this.info?.live && !this.ended; }
  get connected() { return this.welcomed; }

  /** Connect and WATCH from `from` ("live" or a tick); resolves with the WATCH's PLAYBACK.
   * A lost connection is retried (with backoff) instead of failing. */
  open(from) {
    this.from = from;
    this.watchdog ??= setInterval(() => this.#checkAlive(), 500);
    return new Promise((resolve, reject) => {
      this.opened = { resolve, reject };
      this.#connect();
    });
  }

  close() {
    this.closed = true;
    clearInterval(this.watchdog);
    this.ws?.close(1000, "viewer closed");
  }

  // -- controls (each answered by one PLAYBACK, in order) ------------------------------------
  seek(tick) { return this.#control([MSG.SEEK, Math.max(0, Math.trunc(tick))]); }
  play(speed) { return this.#control([MSG.PLAY, speed]); }
  pause() { return this.#control([MSG.PAUSE]); }
  step(n) { return this.#control([MSG.STEP, n]); }
  goLive() { return this.#control([MSG.LIVE]); }

  // -- requests (answered by the reply with the same ref) ------------------------------------
  /** `abandoned`: the markers of abandoned branches too, each flagged `abandoned`. */
  async markers(fromTick = 0, toTick = null, abandoned = false) {
    const tail = abandoned ? [true] : [];
    return (await this.#request((ref) => [MSG.MARKERS, ref, fromTick, toTick, ...tail]))[0];
  }
  async clip(killTick, seconds = 5) {
    return (await this.#request((ref) => [MSG.CLIP, ref, killTick, seconds]))[0];
  }
  /** The live edge now, from LIST (the one message that reports it without moving the view). */
  async refreshEdge() {
    const [matches] = await this.#request((ref) => [MSG.LIST, ref, "live", 200]);
    const mine = matches.find((m) => m.match_id === this.matchId);
    if (mine) this.edge = Math.max(this.edge, mine.tick);
    return this.edge;
  }

  /** This match's entry in LIST (its created_at, ...), or null when it is not among the
   * 200 newest of its kind. */
  async describe() {
    const [matches] = await this.#request((ref) => [MSG.LIST, ref, this.live ? "live" : "finished", 200]);
    return matches.find((m) => m.match_id === this.matchId) ?? null;
  }

  // -- internals -----------------------------------------------------------------------------
  #connect() {
    const ws = new WebSocket(this.url, SUBPROTOCOL);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      if (!(ev.data instanceof ArrayBuffer)) return;  // text frames are not the protocol
      this.#message(decode(new Uint8Array(ev.data)));
    };
    ws.onclose = (ev) => { if (ws === this.ws) this.#closed(ev); };
  }

  #checkAlive() {
    if (!this.welcomed) return;
    const quiet = performance.now() - this.heardAt;
    if (this.probing && quiet > PROBE_AFTER_MS + DEAD_AFTER_MS) {
      const ws = this.ws;
      this.#closed({ code: 1006, reason: "the server stopped answering" });
      ws.close();  // its close event is ignored: it is no longer this.ws
    } else if (!this.probing && quiet > PROBE_AFTER_MS) {
      this.probing = true;
      this.markers(1, 0).catch(() => {});
    }
  }

  #send(msg) {
    if (!this.welcomed) throw new SpectatorError("connection_lost", "not connected to the server");
    this.ws.send(encode(msg));
    const name = NAMES[msg[0]];
    this.sent[name] = (this.sent[name] ?? 0) + 1;
  }

  #control(msg) {
    return new Promise((resolve, reject) => {
      this.#send(msg);
      this.pending.push({ resolve, reject });
    });
  }

  #request(build) {
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      this.#send(build(ref));
      this.replies.set(ref, { resolve, reject });
    });
  }

  #watch() {
    const reconnecting = this.attempt > 0;
    // Resume where the viewer was: live, or the tick on screen (and playing again).
    const from = this.mode === "live" || (this.from === "live" && !this.state) ? "live"
      : this.state ? this.state.tick : this.from;
    const resumeSpeed = this.mode === "replay" ? this.playback.speed : null;
    this.#control([MSG.WATCH, this.matchId, from]).then((pb) => {
      this.attempt = 0;
      if (resumeSpeed !== null) this.play(resumeSpeed).catch(() => {});
      if (reconnecting) this.on.status?.({ kind: "ok" });
      this.opened?.resolve(pb);
      this.opened = null;
    }, (exc) => {
      if (exc.code === "connection_lost") return;  // retried by #closed
      if (this.opened) this.opened.reject(exc); else this.on.error?.(exc);
      this.opened = null;
    });
  }

  #closed(ev) {
    this.ws = null;
    this.welcomed = false;
    const lost = new SpectatorError("connection_lost", `connection closed (${ev.code})`);
    for (const p of this.pending.splice(0)) p.reject(lost);
    for (const p of this.replies.values()) p.reject(lost);
    this.replies.clear();
    if (this.closed) return;
    if (ev.code === CLOSE_UNAUTHORIZED) {  // retrying with the same token cannot help
      const exc = new SpectatorError("unauthorized", ev.reason || "invalid token");
      if (this.opened) this.opened.reject(exc); else this.on.error?.(exc);
      this.opened = null;
      return;
    }
    // 1001 (server going away), 4010 (too slow), 1006 (network): come back where we were.
    const delay = RETRY_DELAYS_MS[Math.min(this.attempt, RETRY_DELAYS_MS.length - 1)];
    this.attempt += 1;
    this.on.status?.({ kind: "lost", attempt: this.attempt, delay, code: ev.code, reason: ev.reason });
    setTimeout(() => { if (!this.closed) this.#connect(); }, delay);
  }

  #message(msg) {
    this.heardAt = performance.now();
    this.probing = false;
    const [type] = msg;
    const name = NAMES[type] ?? String(type);
    this.received[name] = (this.received[name] ?? 0) + 1;
    switch (type) {
      case MSG.WELCOME:
        this.welcomed = true;
        this.#watch();
        break;
      case MSG.WATCHING: {
        const info = msg[1];
        if (info.game !== "arena" || info.state_format !== arena.STATE_FORMAT) {
          const exc = new SpectatorError("unsupported", `this viewer draws arena matches, not ${info.game}`);
          if (this.opened) this.opened.reject(exc); else this.on.error?.(exc);
          this.opened = null;
          this.close();
          return;
        }
        this.info = info;
        this.ended = info.status === "ended" || info.status === "interrupted";
        this.edge = Math.max(this.edge, info.last_tick);
        break;
      }
      case MSG.STATE: {
        const [, tick, , data] = msg;
        const state = arena.decodeKeyframe(data);
        if (state.tick !== tick) throw new Error(`STATE says tick ${tick}, its keyframe ${state.tick}`);
        this.state = state;
        this.prev = null;
        this.recent = [];
        this.changedAt = performance.now();
        this.on.reset?.(tick);
        break;
      }
      case MSG.FRAME: {
        const [, tick, blob] = msg;
        const s = this.state;
        const events = blob ? arena.decodeBatch(blob, tick) : [];
        if (restores(events)) {  // a rewind or a fork: the view jumps, nothing to interpolate
          this.prev = null;
          this.recent = [];
        } else {
          this.prev = { x: s.x.slice(), y: s.y.slice(), tick: s.tick };
        }
        this.state = foldEvents(arena, s, events, tick);
        if (events.length) this.recent.push({ tick, events });
        while (this.recent.length && this.recent[0].tick < tick - RECENT_TICKS) this.recent.shift();
        this.changedAt = performance.now();
        if (tick > this.edge) this.edge = tick;
        this.on.frame?.(tick, events);
        break;
      }
      case MSG.PLAYBACK: {
        const [, mode, speed, tick, liveEdge, clamped] = msg;
        this.playback = { mode, speed, tick, live_edge: liveEdge, clamped };
        this.edge = Math.max(this.edge, liveEdge);
        // Exactly one PLAYBACK answers each control, in order; the server adds one unasked
        // when playback reaches the edge.
        const waiter = this.pending.shift();
        this.on.playback?.(this.playback, !!waiter);
        waiter?.resolve(this.playback);
        break;
      }
      case MSG.SKIPPED:
        this.on.skipped?.({ from: msg[1], to: msg[2], reason: msg[3] });
        break;
      case MSG.ENDED:
        this.ended = true;
        if (this.info) this.info = { ...this.info, status: msg[1], live: false };
        this.on.ended?.({ status: msg[1], reason: msg[2], tick: msg[3] });
        break;
      case MSG.MATCHES:
      case MSG.MARKERS_REPLY:
      case MSG.CLIP_REPLY:
      case MSG.SCOREBOARD_REPLY: {
        const waiter = this.replies.get(msg[1]);
        if (waiter) {
          this.replies.delete(msg[1]);
          waiter.resolve(msg.slice(2));
        }
        break;  // a SCOREBOARD push (ref nil): the page computes standings from the state
      }
      case MSG.ERROR: {
        const [, code, message, ref] = msg;
        const exc = new SpectatorError(code, message);
        // An ERROR answers a request (its ref) or, without one, the oldest control
        // (a control that fails gets no PLAYBACK).
        let waiter = typeof ref === "number" ? this.replies.get(ref) : undefined;
        if (waiter) this.replies.delete(ref);
        else if (ref === null || ref === undefined) waiter = this.pending.shift();
        if (waiter) waiter.reject(exc); else this.on.error?.(exc);
        break;
      }
      default:
        break;  // a newer server's message this viewer does not need
    }
  }
}
