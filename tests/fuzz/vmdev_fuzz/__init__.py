"""vmdev's own fuzz kit: adversarial inputs for every input surface and the oracles that judge the
answers (see ``tests/fuzz/README.md``).

``text`` makes hostile strings, ``hosts`` describes fake hosts and builds them
(:class:`vmdev.fakehost.FakeHost` plus the families' test builders), ``strategies`` draws cases
for each surface, ``qemuopts`` parses QEMU command lines as QEMU does, ``oracles`` judges an
outcome, ``surfaces`` runs one case of a surface, ``known`` lists the bugs owned by others that
the oracles still see, and ``runner`` drives many cases with a per-case time limit and counts.
"""
