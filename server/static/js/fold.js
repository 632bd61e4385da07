// THE fold of a match's stream in the browser, the same rule as replay/fold.py: the
// game's events change the state one by one (the game's viewer module: applyEvent), and
// two of matchreplay's own events replace it (docs/replay.md "Rewinds and forks"):
//   rewound [from_tick, to_tick, actor, reason, at_ms, state_format, state]: from its tick
//           B on, the state is the carried state of T re-clocked to B (game.rebase);
//   forked  [parent, parent_tick, state_format, state, players]: the parent's state of
//           the fork tick (re-clocked only if the event's tick differs).
// Every other system event (type 0xFF00 and up: inputs, admin, session, takeover, and
// any this page does not know yet) changes nothing and is skipped.
export const SYSTEM = { FIRST: 0xff00, INPUTS: 0xff00, ADMIN: 0xff01, SESSION: 0xff02, REWOUND: 0xff03, TAKEOVER: 0xff04, FORKED: 0xff05 };

/** The state a rewound or forked event of `tick` sets, decoded by `game`. */
export function restoredState(game, e) {
  const [format, blob] = e.type === SYSTEM.REWOUND ? e.data.slice(5, 7) : e.data.slice(2, 4);
  if (format !== game.STATE_FORMAT) {
    throw new Error(`a ${e.type === SYSTEM.REWOUND ? "rewound" : "forked"} event carries state format ${format}; this viewer reads ${game.STATE_FORMAT}`);
  }
  const state = game.decodeKeyframe(blob);
  const from = e.type === SYSTEM.REWOUND ? null : e.data[1];  // a fork keeps its parent's clock
  return from === e.tick ? state : game.rebase(state, e.tick);
}

/** Fold `events` (all with tick <= toTick, in stream order) into `state` and set its clock
 * to `toTick`. Returns the state: the same object, or a new one when an event replaced it. */
export function foldEvents(game, state, events, toTick) {
  for (const e of events) {
    if (e.type === SYSTEM.REWOUND || e.type === SYSTEM.FORKED) {
      state = restoredState(game, e);
    } else if (e.type < SYSTEM.FIRST) {
      game.applyEvent(state, e);
    }
  }
  state.tick = toTick;
  return state;
}

/** Whether the events replace the state (the view jumps: no interpolation across it). */
export const restores = (events) => events.some((e) => e.type === SYSTEM.REWOUND || e.type === SYSTEM.FORKED);
