//! The session reports, a pure function of the run directory's `sessions/`.
