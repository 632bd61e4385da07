// The timeline scrubber: a range input over 0..last tick, the live edge, and clickable
// markers (kills, multi-kills, joins, match start and end, rewinds) from the server's
// timeline. Markers closer than MERGE_PX on screen are one button (its title lists them
// all): at 0:00 the joins and the match start would otherwise cover each other.
//
// Rewinds (docs/replay.md "Rewinds and forks"): each is a marker at its tick B, and the
// ticks it abandoned are a hatched band on the bar. Markers of abandoned ticks come only
// when the page asks for them (MARKERS with abandoned: true), each flagged `abandoned`,
// and are drawn hollow and labelled so.
const MARKER_KINDS = {
  killed: "kill", multi_kill: "multi", match_started: "match", match_ended: "match",
  joined: "roster", left: "roster", rewound: "rewind",
};
/** The legend, in the order of importance a merged button shows (its colour). */
export const MARKER_LEGEND = [
  ["rewind", "rewind"], ["multi", "multi-kill"], ["kill", "kill"], ["match", "match start / end"],
  ["roster", "player joined / left"], ["other", "other"],
];

/** The abandoned branches as open tick ranges [lo, hi] (the ticks lo + 1 .. hi - 1), from
 * the rewound markers of the surviving timeline: the walk of replay/timeline.py
 * abandoned_ranges (a rewind at B met walking back from the last tick jumps back to its
 * target T; rewinds inside an abandoned branch are abandoned markers and abandon nothing). */
export function abandonedRanges(markers, lastTick) {
  const ranges = [];
  let cursor = lastTick;
  const rewinds = markers.filter((m) => m.kind === "rewound" && !m.abandoned);
  for (let i = rewinds.length - 1; i >= 0; i--) {
    const { tick, data } = rewinds[i];
    if (tick <= cursor) {
      ranges.push([data.to_tick, tick]);
      cursor = data.to_tick;
    }
  }
  return ranges.reverse();
}

/** The abandoned range holding `tick`, or null when the tick is on the surviving timeline. */
export const abandonedAt = (ranges, tick) => ranges.find(([lo, hi]) => lo < tick && tick < hi) ?? null;
const MERGE_PX = 10;

export const clock = (ticks, rate) => {
  const s = Math.max(0, Math.floor(ticks / rate));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};

export class Timeline {
  constructor(root, { onSeek }) {
    this.scrubber = root.querySelector("#scrubber");
    this.markerBar = root.querySelector("#markers");
    this.max = 0;
    this.dragging = false;
    this.markers = [];
    this.ranges = [];
    // "input" fires while dragging: seek continuously (the session drops stale seeks).
    this.scrubber.addEventListener("input", () => {
      this.dragging = true;
      onSeek(Number(this.scrubber.value));
    });
    this.scrubber.addEventListener("change", () => {
      this.dragging = false;
      onSeek(Number(this.scrubber.value));
    });
    this.markerBar.addEventListener("click", (ev) => {
      const tick = ev.target?.dataset?.tick;
      if (tick !== undefined) onSeek(Number(tick));
    });
    // The merging depends on the bar's width in pixels (a phone, a resized window).
    let width = 0;
    new ResizeObserver(() => {
      if (this.markerBar.clientWidth !== width) {
        width = this.markerBar.clientWidth;
        this.#layout();
      }
    }).observe(this.markerBar);
  }

  setRange(max) {
    if (max === this.max) return;
    this.max = max;
    this.scrubber.max = String(max);
    this.#layout();
  }

  setTick(tick) {
    if (!this.dragging) this.scrubber.value = String(tick);
  }

  /** `ranges`: the abandoned branches (abandonedRanges), drawn as bands. */
  setMarkers(markers, tickRate, ranges = []) {
    this.markers = markers;
    this.ranges = ranges;
    this.labels = describeAll(markers, tickRate);
    this.tickRate = tickRate;
    this.#layout();
  }

  /** The last kill marker at or before `tick` on the surviving timeline (for "clip the
   * seconds before this kill": the server clips surviving kills only). */
  lastKill(tick) {
    for (let i = this.markers.length - 1; i >= 0; i--) {
      const m = this.markers[i];
      if (m.tick <= tick && !m.abandoned && (m.kind === "killed" || m.kind === "multi_kill")) return m;
    }
    return null;
  }

  #layout() {
    const bar = this.markerBar;
    bar.replaceChildren();
    if (!this.max) return;
    for (const [lo, hi] of this.ranges) {
      const band = document.createElement("div");
      band.className = "abandoned-range";
      const from = Math.min(lo + 1, this.max), to = Math.min(hi - 1, this.max);
      band.style.left = `${(from / this.max) * 100}%`;
      band.style.width = `${(Math.max(0, to - from) / this.max) * 100}%`;
      band.dataset.from = String(lo + 1);
      band.dataset.to = String(hi - 1);
      band.title = `Abandoned: ticks ${lo + 1}–${hi - 1}, undone by the rewind at ${clock(hi, this.tickRate)} (tick ${hi})`;
      bar.append(band);
    }
    const width = Math.max(1, bar.clientWidth);
    const groups = [];  // markers (oldest first) closer than MERGE_PX to the group's first
    for (const [i, m] of this.markers.entries()) {
      if (m.tick > this.max) continue;
      const x = (m.tick / this.max) * width;
      const last = groups.at(-1);
      const text = m.abandoned ? `${this.labels[i]} (abandoned)` : this.labels[i];
      const item = { ...m, label: `${clock(m.tick, this.tickRate)} ${text}` };
      // Abandoned and surviving markers never share a button: one would hide the other.
      if (last && x - last.x < MERGE_PX && !!last.markers[0].abandoned === !!m.abandoned) last.markers.push(item);
      else groups.push({ x, markers: [item] });
    }
    const rank = (kind) => MARKER_LEGEND.findIndex(([k]) => k === kind);
    for (const { markers } of groups) {
      const kinds = markers.map((m) => MARKER_KINDS[m.kind] ?? "other");
      const shown = kinds.reduce((a, b) => (rank(b) < rank(a) ? b : a));
      const el = document.createElement("button");
      el.className = `marker marker-${shown}${markers[0].abandoned ? " abandoned" : ""}`;
      el.dataset.kind = shown;
      el.style.left = `${(markers[0].tick / this.max) * 100}%`;
      el.dataset.tick = String(markers[0].tick);
      el.dataset.count = String(markers.length);
      el.title = markers.map((m) => m.label).join("\n");
      el.setAttribute("aria-label", markers.length > 1 ? `${markers.length} events: ${el.title}` : el.title);
      bar.append(el);
    }
  }
}

/** The legend's entries: a swatch of each marker colour, and how players are coloured. */
export function renderLegend(root) {
  const items = MARKER_LEGEND.map(([kind, text]) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch marker-${kind}`;
    sw.dataset.kind = kind;
    li.append(sw, ` ${text}`);
    return li;
  });
  const players = document.createElement("li");
  players.textContent = "players: each dot has its player's colour, shown beside the name in the scoreboard";
  root.replaceChildren(...items, players);
}

/** Each marker's text, with the game's display names (from the joined markers before
 * it) instead of player ids and slots. */
function describeAll(markers, tickRate) {
  const names = new Map(), slots = new Map();
  const who = (player, slot) => (player ? names.get(player) ?? player : slots.get(slot) ?? `slot ${slot}`);
  return markers.map((m) => {
    const d = m.data;
    switch (m.kind) {
      case "joined":
        names.set(d.player, d.name ?? d.player);
        slots.set(d.slot, d.name ?? d.player);
        return `${d.name ?? d.player} joined`;
      case "killed": return `${who(d.killer_player, d.killer)} killed ${who(d.victim_player, d.victim)}`;
      case "multi_kill": return `${who(d.killer_player, d.killer)}: ${d.count} kills in a row`;
      case "left": return `${who(d.player, d.slot)} left`;
      case "match_started": return "match started";
      case "match_ended": return `match ended (${d.reason}), winner ${d.winner ? who(d.winner) : "none"}`;
      case "rewound": return `rewound to ${clock(d.to_tick, tickRate)} (tick ${d.to_tick}) by ${d.actor}${d.reason ? `: ${d.reason}` : ""}`;
      default: return m.kind;
    }
  });
}
