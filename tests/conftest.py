import os

from hypothesis import settings

# Property tests: 80 examples by default; CI runs a fixed set (derandomized) so
# a result never depends on the draw; DETKIT_HYPOTHESIS_EXAMPLES=N runs N of
# them for a deeper local search.
settings.register_profile("default", max_examples=80, deadline=None)
settings.register_profile("ci", max_examples=80, deadline=None, derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
elif os.environ.get("DETKIT_HYPOTHESIS_EXAMPLES"):
    settings.register_profile("deep", max_examples=int(os.environ["DETKIT_HYPOTHESIS_EXAMPLES"]), deadline=None)
    settings.load_profile("deep")
else:
    settings.load_profile("default")
