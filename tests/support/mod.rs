//! The shared test harness: a strict test Loki, the sluice binary run as users run it, and
//! generators of realistic log lines.

#![allow(dead_code)]

pub mod agent;
pub mod docker;
pub mod exporter;
pub mod kube_api;
pub mod lines;
pub mod logfiles;
pub mod loki;
pub mod otlp;
pub mod prometheus;
