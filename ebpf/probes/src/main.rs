//! fdr's kernel programs. Built for `bpfel-unknown-none` by the agent's
//! build script; loaded and attached by `fdr_agent::probes`.
#![no_std]
#![no_main]

mod cred;
mod emit;
mod file;
mod net;
mod path;
mod process;
mod syscalls;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
