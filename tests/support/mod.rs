pub mod pebble;
pub mod standin;
pub mod webui;
