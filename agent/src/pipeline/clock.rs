//! Kernel `CLOCK_BOOTTIME` timestamps → wall-clock time.

/// Offset between `CLOCK_REALTIME` and `CLOCK_BOOTTIME`, sampled so that the
/// two reads are as close together as possible. Refresh it now and then to
/// follow clock adjustments.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset_ns: i128,
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec pointer; these clocks cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl BootClock {
    pub fn sample() -> Self {
        let mut best: Option<(i128, i128)> = None; // (read spread, offset)
        for _ in 0..5 {
            let b0 = now(libc::CLOCK_BOOTTIME);
            let r = now(libc::CLOCK_REALTIME);
            let b1 = now(libc::CLOCK_BOOTTIME);
            let spread = b1 - b0;
            let offset = r - (b0 + spread / 2);
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, offset));
            }
        }
        BootClock {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch for a boot-time stamp.
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// `CLOCK_BOOTTIME` now, in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        now(libc::CLOCK_BOOTTIME) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_now_maps_to_system_time_now() {
        let clock = BootClock::sample();
        let wall = clock.wall_ns(BootClock::boot_now_ns());
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(wall.abs_diff(sys) < 50_000_000, "wall {wall} sys {sys}");
    }
}
