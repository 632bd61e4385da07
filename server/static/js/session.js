// The replay session of one match: the exact state at the viewed tick, built from the
// server's fragment bases plus the events after them, folded here (arena.js).
//
// Seek to T (docs/viewer.md): if T is ahead of the current tick by at most
// FOLD_AHEAD_TICKS, fold forward from the current state (Dota's clarity does the same);
// otherwise start from the fragment base at or before T (cached here) and fold to T.
// Events are fetched in chunks of CHUNK_TICKS and kept per tick; a live match's last
// chunk is topped up as its live edge moves.
import { ApiError } from "./api.js";
import { copyState, decodeBatch, decodeKeyframe, evolve } from "./arena.js";

export const CHUNK_TICKS = 300;        // 10 s at 30 Hz: ~20-200 KiB of events per request
const FOLD_AHEAD_TICKS = 300;
const MAX_BASES = 64;                  // cached fragment bases: ~40 bytes per slot each
const MAX_CHUNKS = 120;                // ~20 min at 30 Hz kept; older chunks are refetched
const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class ReplaySession {
  constructor(api, matchId, { onStatus = () => {}, onMeta = () => {} } = {}) {
    this.api = api;
    this.matchId = matchId;
    this.onStatus = onStatus;
    this.onMeta = onMeta;
    this.meta = null;
    this.state = null;         // exact state at this.state.tick
    this.prev = null;          // {x, y} of the tick before, for interpolation
    this.bases = new Map();    // base tick -> state (never mutated)
    this.chunks = new Map();   // chunk index -> {to: last loaded tick, byTick: Map}
    this.pending = new Map();  // chunk index -> in-flight fetch
    this.gen = 0;              // seek generation: a newer seek abandons older ones
    this.lost = false;
  }

  get tick() { return this.state ? this.state.tick : -1; }
  get liveEdge() { return this.meta ? this.meta.live_edge : 0; }
  get live() { return !!this.meta?.live; }

  /** Run `fn`, retrying while the server is unreachable (a lost connection). */
  async retry(fn) {
    for (let attempt = 0; ; attempt++) {
      try {
        const value = await fn();
        if (this.lost) { this.lost = false; this.onStatus({ kind: "ok" }); }
        return value;
      } catch (exc) {
        if (!(exc instanceof ApiError) || !exc.retryable) throw exc;
        const delay = RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)];
        this.lost = true;
        this.onStatus({ kind: "lost", attempt: attempt + 1, delay, message: exc.message });
        await sleep(delay);
      }
    }
  }

  async open() {
    this.meta = await this.retry(() => this.api.match(this.matchId));
    this.onMeta(this.meta);
    return this.meta;
  }

  async refreshMeta() {
    this.meta = await this.retry(() => this.api.match(this.matchId));
    this.onMeta(this.meta);
    return this.meta;
  }

  eventsAt(tick) {
    return this.chunks.get(Math.floor(tick / CHUNK_TICKS))?.byTick.get(tick) ?? [];
  }

  loaded(tick) {
    const c = this.chunks.get(Math.floor(tick / CHUNK_TICKS));
    return !!c && c.to >= tick;
  }

  /** Make the events of from..to available (as far as the live edge allows). */
  async ensureEvents(from, to) {
    const jobs = [];
    for (let k = Math.floor(from / CHUNK_TICKS); k <= Math.floor(to / CHUNK_TICKS); k++) {
      if (!this.loaded(Math.min(to, (k + 1) * CHUNK_TICKS - 1))) jobs.push(this.#loadChunk(k));
    }
    await Promise.all(jobs);
  }

  #loadChunk(k) {
    let job = this.pending.get(k);
    if (job) return job;
    job = this.retry(async () => {
      const chunk = this.chunks.get(k);
      const start = chunk ? chunk.to + 1 : k * CHUNK_TICKS;
      const [first, last, edge, status, batch] = await this.api.events(
        this.matchId, start, (k + 1) * CHUNK_TICKS - 1);
      this.#noteEdge(edge, status);
      if (last < first) return;  // nothing new below the live edge yet
      const c = this.chunks.get(k) ?? { to: first - 1, byTick: new Map() };
      for (const e of decodeBatch(batch, first)) {
        if (e.tick <= c.to) continue;  // already have it (overlapping top-up)
        let list = c.byTick.get(e.tick);
        if (!list) c.byTick.set(e.tick, (list = []));
        list.push(e);
      }
      c.to = Math.max(c.to, last);
      this.chunks.set(k, c);
      this.#evict(k);
    }).finally(() => this.pending.delete(k));
    this.pending.set(k, job);
    return job;
  }

  #evict(keep) {
    // Map order is insertion order: drop the oldest chunks that are far from the view.
    for (const k of this.chunks.keys()) {
      if (this.chunks.size <= MAX_CHUNKS) break;
      if (Math.abs(k - keep) > 2) this.chunks.delete(k);
    }
  }

  #noteEdge(edge, status) {
    if (!this.meta) return;
    if (edge > this.meta.live_edge || status !== this.meta.status) {
      this.meta = { ...this.meta, live_edge: Math.max(edge, this.meta.live_edge), status,
        live: status !== "ended" && status !== "interrupted" };
      this.onMeta(this.meta);
    }
  }

  /** Poll a live match for newly durable ticks below its delayed edge. */
  async pollLive() {
    const next = this.liveEdge + 1;
    await this.ensureEvents(next, next + CHUNK_TICKS - 1);
  }

  async #base(tick) {
    const fragment = this.meta.fragment;
    const baseTick = tick - (tick % fragment);
    let base = this.bases.get(baseTick);
    if (!base) {
      const [at, keyframe] = await this.retry(() => this.api.state(this.matchId, tick));
      base = decodeKeyframe(keyframe);
      if (base.tick !== at) throw new Error(`fragment base says tick ${at}, state says ${base.tick}`);
      if (this.bases.size >= MAX_BASES) this.bases.delete(this.bases.keys().next().value);
      this.bases.set(at, base);
    }
    return base;
  }

  /** Make this.state the exact state at `tick`. Returns false if a newer seek won. */
  async seek(tick) {
    const gen = ++this.gen;
    tick = Math.max(0, Math.min(tick, this.liveEdge));
    let start = this.state;
    if (!start || tick < start.tick || tick - start.tick > FOLD_AHEAD_TICKS) {
      start = await this.#base(tick);
      if (gen !== this.gen) return false;
    }
    await this.ensureEvents(start.tick + 1, tick);
    if (gen !== this.gen) return false;
    const s = start === this.state ? this.state : copyState(start);
    let prev = this.prev;
    if (s.tick === tick && s !== this.state) prev = { x: s.x, y: s.y };
    for (let t = s.tick + 1; t <= tick; t++) {
      if (t === tick) prev = { x: s.x.slice(), y: s.y.slice() };
      evolve(s, this.eventsAt(t), t);
    }
    this.state = s;
    this.prev = prev;
    return true;
  }

  /** Advance one tick if its events are here (never waits: the frame loop calls it). */
  stepForward() {
    const t = this.tick + 1;
    if (t > this.liveEdge || !this.loaded(t)) return false;
    this.prev = { x: this.state.x.slice(), y: this.state.y.slice() };
    evolve(this.state, this.eventsAt(t), t);
    return true;
  }
}
