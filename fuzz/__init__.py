"""Coverage-guided fuzz targets (atheris / libFuzzer) for the capture readers, the L2-L4 decoder, TCP
reassembly with the flow table, and every protocol analyzer.

Run one target: ``python -m fuzz TARGET [libFuzzer flags] [CORPUS_DIR...]``; all of them for a while:
``make fuzz FUZZ_SECONDS=600``. The seed corpus is extracted from the real captures in
``../shared/pcaps`` at run time (``python -m fuzz.corpus``) into ``var/fuzz/corpus/<target>/``.
See docs/fuzzing.md.
"""
