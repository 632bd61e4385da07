// Draws the arena on a canvas. Positions are interpolated between the previous tick and
// the viewed one (alpha in [0, 1]) so motion is smooth at the display's frame rate,
// whatever the tick rate and playback speed; everything else is the exact viewed state.
import { EV, MAP } from "/static/games/arena/viewer.js";

const TAU = Math.PI * 2;
const AIM_UNITS = 4096;
const EFFECT_SECONDS = 0.35;   // how long shots and hits stay visible
const DEATH_SECONDS = 2.0;     // how long a death cross stays

export const slotColor = (slot) => `hsl(${(slot * 137.508) % 360}, 70%, 55%)`;

export class Renderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.frames = 0;
    this.dots = new Map();  // slot -> [x, y] in canvas pixels, as last drawn (test hook)
  }

  #fit() {
    // Match the backing store to the element's size (and the device pixel ratio) so
    // lines stay crisp when the window or the zoom changes.
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    return [w, h];
  }

  /**
   * view: {state, prev, alpha, follow (slot or null), effects: [{tick, events}], tickRate}
   */
  draw(view) {
    const [w, h] = this.#fit();
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0d1117";
    ctx.fillRect(0, 0, w, h);
    const { state: s } = view;
    if (!s) return;
    const pos = (slot) => {
      const a = view.alpha, p = view.prev;
      // A (re)spawn this tick is a teleport (velocity reset to 0 at this tick): no glide.
      const spawned = s.move_tick[slot] === s.tick && s.vx[slot] === 0 && s.vy[slot] === 0;
      if (!p || !s.alive[slot] || spawned) return [s.x[slot], s.y[slot]];
      return [p.x[slot] + (s.x[slot] - p.x[slot]) * a, p.y[slot] + (s.y[slot] - p.y[slot]) * a];
    };

    // Camera: the whole map, or 2x around the followed player (clamped to the map).
    let scale = Math.min(w / MAP.width, h / MAP.height);
    let cx = MAP.width / 2, cy = MAP.height / 2;
    if (view.follow !== null && s.present[view.follow]) {
      scale *= 2;
      [cx, cy] = pos(view.follow);
      cx = Math.min(Math.max(cx, w / scale / 2), MAP.width - w / scale / 2);
      cy = Math.min(Math.max(cy, h / scale / 2), MAP.height - h / scale / 2);
    }
    const ox = w / 2 - cx * scale, oy = h / 2 - cy * scale;
    ctx.setTransform(scale, 0, 0, scale, ox, oy);
    this.dots.clear();
    const px = 1 / scale;  // one screen pixel in map centimetres

    ctx.fillStyle = "#161b22";
    ctx.fillRect(0, 0, MAP.width, MAP.height);
    ctx.strokeStyle = "#21262d";
    ctx.lineWidth = px;
    ctx.beginPath();
    for (let x = 500; x < MAP.width; x += 500) { ctx.moveTo(x, 0); ctx.lineTo(x, MAP.height); }
    for (let y = 500; y < MAP.height; y += 500) { ctx.moveTo(0, y); ctx.lineTo(MAP.width, y); }
    ctx.stroke();
    ctx.strokeStyle = "#8b949e";
    ctx.lineWidth = 3 * px;
    ctx.strokeRect(0, 0, MAP.width, MAP.height);
    ctx.fillStyle = "#57606a";
    for (const [x0, y0, x1, y1] of MAP.walls) ctx.fillRect(x0, y0, x1 - x0, y1 - y0);

    const radius = Math.round((s.settings.player_radius_m ?? 0.4) * 100);
    const range = (s.settings.weapon_range_m ?? 30) * 100;
    this.#effects(ctx, view, s, pos, radius, range, px);

    const font = Math.max(11, Math.round(12 * (window.devicePixelRatio || 1))) * px;
    ctx.font = `${font}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    for (let slot = 0; slot < s.present.length; slot++) {
      if (!s.present[slot] || !s.alive[slot]) continue;
      const [x, y] = pos(slot);
      const a = (s.aim[slot] / AIM_UNITS) * TAU;
      ctx.strokeStyle = slotColor(slot);
      ctx.lineWidth = 2 * px;
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + Math.cos(a) * radius * 2.2, y + Math.sin(a) * radius * 2.2);
      ctx.stroke();
      ctx.fillStyle = slotColor(slot);
      ctx.beginPath();
      ctx.arc(x, y, radius, 0, TAU);
      ctx.fill();
      this.dots.set(slot, [ox + x * scale, oy + y * scale, radius * scale]);
      if (slot === view.follow) {
        ctx.strokeStyle = "#ffffff";
        ctx.lineWidth = 3 * px;
        ctx.beginPath();
        ctx.arc(x, y, radius + 6 * px, 0, TAU);
        ctx.stroke();
      }
      const hp = Math.max(0, s.health[slot] / s.settings.max_health);
      const bw = radius * 2.4, bh = 5 * px, by = y - radius - 12 * px;
      ctx.fillStyle = "#30363d";
      ctx.fillRect(x - bw / 2, by, bw, bh);
      ctx.fillStyle = hp > 0.5 ? "#3fb950" : hp > 0.25 ? "#d29922" : "#f85149";
      ctx.fillRect(x - bw / 2, by, bw * hp, bh);
      ctx.fillStyle = "#e6edf3";
      ctx.fillText(s.names[slot] || s.players[slot] || `#${slot}`, x, y + radius + font + 2 * px);
    }
    this.frames++;
  }

  #effects(ctx, view, s, pos, radius, range, px) {
    const rate = view.tickRate;
    for (const { tick, events } of view.effects) {
      const age = (s.tick - tick + view.alpha) / rate;  // seconds since the event
      for (const e of events) {
        if (e.type === EV.FIRED && age <= EFFECT_SECONDS) {
          const [slot, aim] = e.data;
          const [x, y] = pos(slot);
          const hit = events.find((h) => h.type === EV.HIT && h.data[0] === slot);
          const a = (aim / AIM_UNITS) * TAU;
          let len = rayLength(x, y, Math.cos(a), Math.sin(a), range);
          if (hit) { const [tx, ty] = pos(hit.data[1]); len = Math.hypot(tx - x, ty - y); }
          ctx.strokeStyle = `rgba(255, 230, 120, ${1 - age / EFFECT_SECONDS})`;
          ctx.lineWidth = 2 * px;
          ctx.beginPath();
          ctx.moveTo(x, y);
          ctx.lineTo(x + Math.cos(a) * len, y + Math.sin(a) * len);
          ctx.stroke();
        } else if (e.type === EV.HIT && age <= EFFECT_SECONDS) {
          const [x, y] = pos(e.data[1]);
          ctx.fillStyle = `rgba(248, 81, 73, ${0.7 * (1 - age / EFFECT_SECONDS)})`;
          ctx.beginPath();
          ctx.arc(x, y, radius * 1.6, 0, TAU);
          ctx.fill();
        } else if (e.type === EV.KILLED && age <= DEATH_SECONDS && !s.alive[e.data[1]]) {
          const [x, y] = [s.x[e.data[1]], s.y[e.data[1]]];
          const r = radius * 1.2;
          ctx.strokeStyle = `rgba(248, 81, 73, ${1 - age / DEATH_SECONDS})`;
          ctx.lineWidth = 4 * px;
          ctx.beginPath();
          ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r);
          ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r);
          ctx.stroke();
        } else if ((e.type === EV.RESPAWNED || e.type === EV.SPAWNED) && age <= 1) {
          const [, x, y] = e.data;
          ctx.strokeStyle = `rgba(88, 166, 255, ${1 - age})`;
          ctx.lineWidth = 3 * px;
          ctx.beginPath();
          ctx.arc(x, y, radius * (1 + 2 * age), 0, TAU);
          ctx.stroke();
        }
      }
    }
  }
}

/** Distance along a ray to the first wall or map edge it enters, at most `range`
 * (slab test per box), so a missed shot stops where the rules stop it. */
function rayLength(x, y, dx, dy, range) {
  let best = range;
  for (const [x0, y0, x1, y1] of MAP.walls) {
    let t0 = 0, t1 = best;
    for (const [p, d, lo, hi] of [[x, dx, x0, x1], [y, dy, y0, y1]]) {
      if (Math.abs(d) < 1e-12) { if (p < lo || p > hi) { t0 = Infinity; break; } continue; }
      let a = (lo - p) / d, b = (hi - p) / d;
      if (a > b) [a, b] = [b, a];
      t0 = Math.max(t0, a);
      t1 = Math.min(t1, b);
    }
    if (t0 <= t1 && t0 < best) best = t0;
  }
  // The map's border: leave through the first edge the ray reaches.
  if (dx > 0) best = Math.min(best, (MAP.width - x) / dx);
  if (dx < 0) best = Math.min(best, -x / dx);
  if (dy > 0) best = Math.min(best, (MAP.height - y) / dy);
  if (dy < 0) best = Math.min(best, -y / dy);
  return best;
}
