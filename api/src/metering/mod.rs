//! Prices, cost arithmetic and budget admission.

pub mod budget;
pub mod prices;
