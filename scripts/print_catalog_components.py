"""Print the first-party components in catalog.toml syntax (to keep registry/catalog.toml true)."""

from lmforge.plugins import PluginManager

pm = PluginManager.load()
ours = {n: p for n, p in pm.plugins.items() if p.distribution == "lmforge"}
print("entry_points = [" + ", ".join(f'"{n}"' for n in sorted(ours)) + "]")
print("components = [")
for n in sorted(ours):
    print("    " + ", ".join(f'"{c.kind}/{c.name}"' for c in ours[n].components) + ",")
print("]")
