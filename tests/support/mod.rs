pub mod pebble;
pub mod standin;
pub mod webhook;
pub mod webui;
