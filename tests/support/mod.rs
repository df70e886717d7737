pub mod standin;
pub mod webui;
