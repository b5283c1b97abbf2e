pub mod config;
pub mod dec;
pub mod ids;
pub mod time;
