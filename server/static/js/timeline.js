// The timeline scrubber: a range input over 0..last tick, the live edge, and clickable
// markers (kills, multi-kills, joins, match start and end) from the server's timeline.
const MARKER_KINDS = {
  killed: "kill", multi_kill: "multi", match_started: "match", match_ended: "match",
  joined: "roster", left: "roster",
};

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

  setMarkers(markers, tickRate, names) {
    this.markers = markers;
    this.tickRate = tickRate;
    this.names = names;
    this.#layout();
  }

  /** The last kill marker at or before `tick` (for "clip the seconds before this kill"). */
  lastKill(tick) {
    for (let i = this.markers.length - 1; i >= 0; i--) {
      const m = this.markers[i];
      if (m.tick <= tick && (m.kind === "killed" || m.kind === "multi_kill")) return m;
    }
    return null;
  }

  #layout() {
    const bar = this.markerBar;
    bar.replaceChildren();
    if (!this.max) return;
    for (const m of this.markers) {
      if (m.tick > this.max) continue;
      const el = document.createElement("button");
      el.className = `marker marker-${MARKER_KINDS[m.kind] ?? "other"}`;
      el.style.left = `${(m.tick / this.max) * 100}%`;
      el.dataset.tick = String(m.tick);
      el.title = `${clock(m.tick, this.tickRate)} ${describe(m)}`;
      el.setAttribute("aria-label", el.title);
      bar.append(el);
    }
  }
}

function describe(m) {
  const d = m.data;
  switch (m.kind) {
    case "killed": return `${d.killer_player ?? d.killer} killed ${d.victim_player ?? d.victim}`;
    case "multi_kill": return `${d.killer_player ?? d.killer}: ${d.count} kills in a row`;
    case "joined": return `${d.name ?? d.player} joined`;
    case "left": return `slot ${d.slot} left`;
    case "match_started": return "match started";
    case "match_ended": return `match ended (${d.reason}), winner ${d.winner || "-"}`;
    default: return m.kind;
  }
}
