import os

from hypothesis import settings

# Property tests: 80 examples by default; CI runs a fixed set (derandomized) so
# a result never depends on the draw; DETKIT_HYPOTHESIS_EXAMPLES=N runs N of
# them for a deeper local search.
settings.register_profile("default", max_examples=80, deadline=None)
settings.register_profile("ci", max_examples=80, deadline=None, derandomize=True)
settings.register_profile("deep", max_examples=int(os.environ.get("DETKIT_HYPOTHESIS_EXAMPLES", "0") or 80),
                          deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "deep" if os.environ.get("DETKIT_HYPOTHESIS_EXAMPLES")
                      else "default")
