"""One progress bar for every long fastinit run: materialize, checkpoint, warm-up.

tqdm (imported when a bar is made) already does what fastinit needs:
``delay`` shows a bar only once a run passes that many seconds, and
``disable`` turns it off.
"""

import sys

DELAY_S = 1.0               # an unforced bar appears once a run passes this


def bar(total, desc, enabled=None, unit="it", **kwargs):
    """A tqdm bar on stderr.

    enabled: True shows it at once; None once the run passes
    :data:`DELAY_S` seconds; False never. ``unit="B"`` counts bytes with
    decimal prefixes; other units count items with SI prefixes.
    """
    from tqdm import tqdm
    options = dict(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                   dynamic_ncols=True, delay=0.0 if enabled else DELAY_S, leave=True,
                   disable=enabled is False)
    if unit == "B":
        options["unit_divisor"] = 1000
    options.update(kwargs)
    return tqdm(**options)
