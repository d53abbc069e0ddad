//! LocalQueue
pub struct LocalEngine;
pub struct LocalQueue;
pub struct ManualClock;
