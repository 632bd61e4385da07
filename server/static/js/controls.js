// Visible controls and keyboard shortcuts, both mapped onto the same actions so every
// shortcut has a button (docs/viewer.md lists them).
export const SPEEDS = [0.25, 0.5, 1, 2, 4, 8];

const KEYS = {
  " ": (a) => a.togglePlay(),
  ArrowLeft: (a) => a.seekSeconds(-5),
  ArrowRight: (a) => a.seekSeconds(5),
  ",": (a) => a.step(-1),
  ".": (a) => a.step(1),
  ArrowUp: (a) => a.speedBy(1),
  ArrowDown: (a) => a.speedBy(-1),
  l: (a) => a.goLive(),
  c: (a) => a.clip(),
  f: (a) => a.followNext(),
  Escape: (a) => a.follow(null),
};

export function bindControls(root, actions) {
  // Blur after a click: a focused button would also "click" on the space shortcut.
  const on = (id, fn) => root.querySelector(id).addEventListener("click", (ev) => {
    ev.currentTarget.blur();
    fn();
  });
  on("#play", () => actions.togglePlay());
  on("#step-back", () => actions.step(-1));
  on("#step-fwd", () => actions.step(1));
  on("#back5", () => actions.seekSeconds(-5));
  on("#fwd5", () => actions.seekSeconds(5));
  on("#live", () => actions.goLive());
  on("#clip", () => actions.clip());
  const speed = root.querySelector("#speed");
  speed.replaceChildren(...SPEEDS.map((s) => new Option(`${s}x`, String(s), s === 1, s === 1)));
  speed.addEventListener("change", () => actions.setSpeed(Number(speed.value)));
  document.addEventListener("keydown", (ev) => {
    // Typing in a form field is not a shortcut; modified keys belong to the browser.
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target instanceof HTMLInputElement && ev.target.type !== "range") return;
    if (ev.target instanceof HTMLSelectElement) return;
    const fn = KEYS[ev.key];
    if (!fn) return;
    ev.preventDefault();  // space would scroll, arrows would move the range input
    fn(actions);
  });
  return {
    setPlaying(playing) { root.querySelector("#play").textContent = playing ? "❚❚ Pause" : "▶ Play"; },
    setSpeed(s) { speed.value = String(s); },
  };
}
