"""How long the ingress waits for the ``Residual`` deployment before it answers degraded.

The wait protects the endpoint from a residual replica that hangs; it must not turn a machine that is
slow for everyone (another CPU-heavy job beside Serve) into degraded answers. So the wait is the
configured floor, or ``factor`` times the residual's recent answer time where that is longer, with:

- the estimate rising quickly and falling slowly (as a retransmission timer does): a machine that has just
  become busy is believed at once, one quick answer does not undo it;
- the first answer setting the estimate (an average started at zero needs tens of answers to mean
  anything, and times out the requests meanwhile);
- a cold start: until the residual has answered once, the first requests of a replica (which pay the
  first-call costs, often on a machine still starting the other deployments) wait ``factor`` times the
  floor. A residual that hangs from the start costs that longer wait once: the first timeout ends the
  cold start.

Only answers move the estimate, so a hung or failing replica still degrades after the floor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ResidualWait:
    floor_s: float
    factor: float = 10.0
    rise: float = 0.3  # weight of an answer slower than the estimate
    fall: float = 0.05  # weight of one faster than it
    estimate_s: float | None = None  # None: no answer yet
    cold: bool = True  # no answer and no timeout yet

    def timeout(self) -> float:
        if self.estimate_s is None:
            return self.factor * self.floor_s if self.cold else self.floor_s
        return max(self.floor_s, self.factor * self.estimate_s)

    def answered(self, seconds: float) -> None:
        """The residual answered a call after ``seconds``."""
        self.cold = False
        if self.estimate_s is None:
            self.estimate_s = seconds
        else:
            weight = self.rise if seconds > self.estimate_s else self.fall
            self.estimate_s += weight * (seconds - self.estimate_s)

    def timed_out(self) -> None:
        self.cold = False
