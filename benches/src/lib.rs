//! `benches`: the load generator (`loadgen`), the side-by-side peers and the compare
//! harness. Figures live here and in `benches/RESULTS.md`, never in timed tests.
