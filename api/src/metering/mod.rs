//! Prices, cost arithmetic, budget admission and the usage rollups.

pub mod budget;
pub mod prices;
pub mod rollup;
