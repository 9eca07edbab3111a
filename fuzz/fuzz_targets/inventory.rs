//! Any bytes through inventory loading and validation: never a panic, and the properties of
//! `check_inventory_bytes` hold (accepted values are shell-inert, problems have positions).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = capstan::inventory::fuzz::check_inventory_bytes(data) {
        panic!("{broken}");
    }
});
