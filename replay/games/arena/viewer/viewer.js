// The arena game for the viewer: keyframe format 1 decoding and the event fold, written
// from docs/games.md ("Events", "State and fold", "Keyframe, format 1"). It must give the
// server's state bit for bit (the browser tests compare it with ReplayEngine.state_at),
// so it applies events one by one in order: last write wins, exactly like fold.py.
import { decode } from "/static/js/msgpack.js";

export const EV = {
  MATCH_STARTED: 1, MATCH_ENDED: 2, JOINED: 3, LEFT: 4, SPAWNED: 5, MOVED: 6,
  AIMED: 7, FIRED: 8, HIT: 9, KILLED: 10, RESPAWNED: 11, CHAT: 12,
};
export const EVENT_NAMES = Object.fromEntries(Object.entries(EV).map(([k, v]) => [v, k.toLowerCase()]));
const CURRENT_VERSION = { [EV.JOINED]: 2 };
// Type codes 0xFF00 and up are matchreplay's own events (docs/events.md, "System
// events": the inputs audit trail, ...), stored in the same stream: a fold skips them.
export const SYSTEM_FIRST = 0xff00;
export const NEVER = -(2 ** 30);
/** The keyframe format this module decodes (docs/games.md, "Keyframe, format 1"). */
export const STATE_FORMAT = 1;
/** The arrays holding ticks: re-clocked by rebase (state.py TICK_ARRAYS). */
const TICK_ARRAYS = ["move_tick", "last_fire", "death_tick"];

// The fixed array order of hashes and keyframes; booleans are 1 byte, the rest int32 LE.
const ARRAYS = [
  ["present", 1], ["alive", 1], ["x", 4], ["y", 4], ["vx", 4], ["vy", 4], ["move_tick", 4],
  ["aim", 4], ["health", 4], ["last_fire", 4], ["death_tick", 4], ["kills", 4],
  ["deaths", 4], ["score", 4],
];

export const MAP = {
  width: 6000,
  height: 4000,
  walls: [
    [1400, 800, 1600, 1800], [4400, 2200, 4600, 3200], [2500, 1900, 3500, 2100],
    [800, 2800, 2000, 3000], [4000, 1000, 5200, 1200],
  ],
};

function newArrays(n) {
  const out = {};
  for (const [name, width] of ARRAYS) out[name] = width === 1 ? new Uint8Array(n) : new Int32Array(n);
  return out;
}

function resetSlot(s, slot) {
  for (const [name] of ARRAYS) s[name][slot] = 0;
  s.move_tick[slot] = s.last_fire[slot] = s.death_tick[slot] = NEVER;
}

/** Decode a keyframe (format 1): msgpack [scalars, {array name: raw LE bytes}]. */
export function decodeKeyframe(bytes) {
  const [scalars, arrays] = decode(bytes);
  const [settings, seed, tick, startedTick, ended, winner, endReason, players, names] = scalars;
  const n = settings.max_players;
  const s = { settings, seed, tick, startedTick, ended, winner, endReason,
    players: [...players], names: [...names], ...newArrays(n) };
  for (const [name, width] of ARRAYS) {
    const raw = arrays[name];
    if (!(raw instanceof Uint8Array) || raw.length !== n * width) {
      throw new Error(`keyframe array ${name} has ${raw?.length} bytes, expected ${n * width}`);
    }
    // DataView: the bytes are a view at any offset of the decoded buffer, and the layout
    // is little-endian whatever the platform.
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const dst = s[name];
    for (let i = 0; i < n; i++) dst[i] = width === 1 ? view.getUint8(i) : view.getInt32(i * 4, true);
  }
  return s;
}

/** Re-clock the state to `tick` (rules.rebase, state.py ArenaState.rebase): every
 * tick-valued field moves by the same delta; NEVER and "not started" (-1) stay. */
export function rebase(s, tick) {
  const delta = tick - s.tick;
  s.tick = tick;
  if (s.startedTick >= 0) s.startedTick += delta;
  for (const name of TICK_ARRAYS) {
    const a = s[name];
    for (let i = 0; i < a.length; i++) if (a[i] !== NEVER) a[i] += delta;
  }
  return s;
}

export function copyState(s) {
  const out = { ...s, players: [...s.players], names: [...s.names] };
  for (const [name] of ARRAYS) out[name] = s[name].slice();
  return out;
}

/** Decode an events batch (docs/events.md layout) to [{type, version, tick, data}]. */
export function decodeBatch(bytes, baseTick) {
  return decode(bytes).map(([type, version, delta, ...data]) => {
    if (type === EV.JOINED && version === 1) {  // upcaster v1 -> v2: name = player id
      data = [data[0], data[1], data[1]];
      version = 2;
    }
    return { type, version, tick: baseTick + delta, data };
  });
}

const u16 = (bytes, i) => bytes[2 * i] | (bytes[2 * i + 1] << 8);

/** Apply one event to the state (mutates it). */
export function applyEvent(s, e) {
  if (e.type >= SYSTEM_FIRST) return;  // not the game's: changes no state
  const d = e.data, t = e.tick;
  if ((CURRENT_VERSION[e.type] ?? 1) !== e.version) {
    throw new Error(`event type ${e.type} version ${e.version} is not understood by this viewer`);
  }
  switch (e.type) {
    case EV.MOVED: {
      const [slots, xs, ys] = d;
      for (let i = 0; i < slots.length; i++) {
        const slot = slots[i], x = u16(xs, i), y = u16(ys, i);
        s.vx[slot] = x - s.x[slot];
        s.vy[slot] = y - s.y[slot];
        s.x[slot] = x;
        s.y[slot] = y;
        s.move_tick[slot] = t;
      }
      break;
    }
    case EV.AIMED: {
      const [slots, aims] = d;
      for (let i = 0; i < slots.length; i++) s.aim[slots[i]] = u16(aims, i);
      break;
    }
    case EV.FIRED: s.last_fire[d[0]] = t; s.aim[d[0]] = d[1]; break;
    case EV.HIT: s.health[d[1]] = d[3]; break;
    case EV.KILLED: {
      const [killer, victim] = d;
      s.alive[victim] = 0;
      s.death_tick[victim] = t;
      s.deaths[victim] += 1;
      s.kills[killer] += 1;
      s.score[killer] += 1;
      break;
    }
    case EV.SPAWNED:
    case EV.RESPAWNED: {
      const [slot, x, y] = d;
      s.alive[slot] = 1;
      s.health[slot] = s.settings.max_health;
      s.x[slot] = x; s.y[slot] = y; s.vx[slot] = 0; s.vy[slot] = 0;
      s.move_tick[slot] = t;
      break;
    }
    case EV.JOINED: {
      const [slot, player, name] = d;
      resetSlot(s, slot);
      s.present[slot] = 1;
      s.players[slot] = player;
      s.names[slot] = name;
      break;
    }
    case EV.LEFT: {
      const [slot] = d;
      s.players[slot] = null;
      s.names[slot] = "";
      resetSlot(s, slot);
      break;
    }
    case EV.MATCH_STARTED: s.startedTick = t; break;
    case EV.MATCH_ENDED: s.ended = true; [s.winner, s.endReason] = d; break;
    case EV.CHAT: break;  // an outcome for the timeline only; it changes no state
    default: throw new Error(`unknown arena event type ${e.type}`);
  }
}

/** Apply the events of one tick (all with tick <= toTick) and set the clock to toTick. */
export function evolve(s, events, toTick) {
  for (const e of events) applyEvent(s, e);
  s.tick = toTick;
  return s;
}

/** Standings, best first: score desc, deaths asc, slot asc (rules.scoreboard). */
export function scoreboard(s) {
  const rows = [];
  for (let slot = 0; slot < s.present.length; slot++) {
    if (!s.present[slot]) continue;
    rows.push({ player: s.players[slot], name: s.names[slot], slot, score: s.score[slot],
      kills: s.kills[slot], deaths: s.deaths[slot], alive: !!s.alive[slot] });
  }
  return rows.sort((a, b) => b.score - a.score || a.deaths - b.deaths || a.slot - b.slot);
}

/** How the match ended at this state's tick ({winner: player id or "", winner_name,
 * reason}), or null while it is not over (rules.result). */
export function result(s) {
  if (!s.ended) return null;
  const slot = s.winner ? s.players.indexOf(s.winner) : -1;
  return { winner: s.winner, winner_name: slot >= 0 ? s.names[slot] || s.winner : s.winner, reason: s.endReason };
}

/** Whether anyone is on the field (present and alive): an empty arena tells nothing. */
export function anyoneOnField(s) {
  for (let slot = 0; slot < s.present.length; slot++) if (s.present[slot] && s.alive[slot]) return true;
  return false;
}

/** The state as plain JSON: what the test hook exposes (docs/viewer.md). */
export function plainState(s) {
  const players = [];
  for (let slot = 0; slot < s.present.length; slot++) {
    if (!s.present[slot]) continue;
    players.push({
      slot, id: s.players[slot], name: s.names[slot], x: s.x[slot], y: s.y[slot],
      aim: s.aim[slot], health: s.health[slot], alive: !!s.alive[slot],
      kills: s.kills[slot], deaths: s.deaths[slot], score: s.score[slot],
    });
  }
  return { tick: s.tick, started_tick: s.startedTick, ended: s.ended, winner: s.winner, players };
}
