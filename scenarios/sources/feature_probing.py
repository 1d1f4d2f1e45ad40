"""Feature probing: every probe of bpfsys.features, as a tool does at start-up."""

from bpfsys.features import probe_all

for feature, present in probe_all().items():
    print(f"{feature.value}: {'yes' if present else 'no'}")
