// kessai_sim: the Verilated board (`kessai_top`) with its UART pins bridged, bit by bit, to a
// Linux pseudo-terminal. Built and started by `kessai-sim` (testbench/src/bin/kessai-sim.rs);
// see docs/sim.md.
//
//   kessai_sim --clocks-per-bit C --clock-hz F [--once] [--noise RATE --seed S]
//              [--trace FILE --trace-from CYCLE --trace-cycles N] [--probe-cycles N]
//
// stdout, one line each, flushed:
//   SIM: clock_hz=F clocks_per_bit=C baud_equivalent=B cycles_per_second=R
//   UART: /dev/pts/N
//   CYCLES: cycles=N wall_seconds=S              (on exit, and on SIGUSR1)
//
// The host->board direction is serialized from the bytes read on the pty master (start bit,
// 8 data bits LSB first, stop bit, `clocks_per_bit` cycles each). The board->host direction is
// sampled in the middle of each bit of `uart_tx` and written to the master. `--noise RATE`
// hits each bit, in both directions, with probability RATE: 3 in 4 hits flip the bit, 1 in 4
// drop it (the line skips that bit time; the receiver shifts). The slave side stays open here
// until the host has sent its first byte, so a host that opens, closes and reopens does not
// hang up the master. With `--once` the simulator exits when the host hangs up after that.
// When nothing is going on (no bytes either way, the board idle for longer than its frame
// idle timeout) it waits in poll() instead of spinning, so simulated time stops while idle.

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include "Vkessai_top.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

static volatile sig_atomic_t g_stop = 0;
static volatile sig_atomic_t g_report = 0;
static void on_stop(int) { g_stop = 1; }
static void on_usr1(int) { g_report = 1; }

static void die(const char* what) {
    fprintf(stderr, "kessai_sim: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(const char* msg) {
    fprintf(stderr, "kessai_sim: %s\n", msg);
    exit(2);
}

struct Rng {
    uint64_t s;
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1DULL;
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
};

// A noise decision for one bit: 0 none, 1 flip, 2 drop.
struct Noise {
    double rate = 0.0;
    Rng rng{1};
    uint64_t flips = 0, drops = 0;
    int hit() {
        if (rate <= 0.0 || rng.uniform() >= rate) return 0;
        if ((rng.next() & 3) == 0) {
            drops++;
            return 2;
        }
        flips++;
        return 1;
    }
};

int main(int argc, char** argv) {
    uint32_t cpb = 0;
    uint64_t clock_hz = 0;
    bool once = false;
    double noise_rate = 0.0;
    uint64_t seed = 1;
    const char* trace_file = nullptr;
    uint64_t trace_from = 0, trace_cycles = 100000;
    uint64_t probe_cycles = 20000;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) usage(("missing value for " + a).c_str());
            return argv[++i];
        };
        if (a == "--clocks-per-bit") cpb = strtoul(val(), nullptr, 0);
        else if (a == "--clock-hz") clock_hz = strtoull(val(), nullptr, 0);
        else if (a == "--once") once = true;
        else if (a == "--noise") noise_rate = strtod(val(), nullptr);
        else if (a == "--seed") seed = strtoull(val(), nullptr, 0);
        else if (a == "--trace") trace_file = val();
        else if (a == "--trace-from") trace_from = strtoull(val(), nullptr, 0);
        else if (a == "--trace-cycles") trace_cycles = strtoull(val(), nullptr, 0);
        else if (a == "--probe-cycles") probe_cycles = strtoull(val(), nullptr, 0);
        else if (a.rfind("+verilator", 0) == 0) {}
        else usage(("unknown argument " + a).c_str());
    }
    if (cpb < 4) usage("--clocks-per-bit must be at least 4");
    if (noise_rate < 0.0 || noise_rate >= 1.0) usage("--noise must be in [0, 1)");
#if !VM_TRACE
    if (trace_file) usage("--trace needs a model built with tracing (kessai-sim --trace builds one)");
#endif

    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGHUP, on_stop);
    signal(SIGUSR1, on_usr1);
    signal(SIGPIPE, SIG_IGN);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
#if VM_TRACE
    ctx->traceEverOn(true);
#endif
    auto top = std::make_unique<Vkessai_top>(ctx.get());
    uint64_t cycle = 0;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> vcd;
#endif
    auto tick = [&]() {
        top->clock = 0;
        top->eval();
#if VM_TRACE
        if (vcd) vcd->dump(2 * cycle);
#endif
        top->clock = 1;
        top->eval();
#if VM_TRACE
        if (vcd) vcd->dump(2 * cycle + 1);
#endif
        cycle++;
#if VM_TRACE
        if (trace_file && !vcd && cycle >= trace_from && cycle < trace_from + trace_cycles) {
            vcd = std::make_unique<VerilatedVcdC>();
            top->trace(vcd.get(), 99);
            vcd->open(trace_file);
        } else if (vcd && cycle >= trace_from + trace_cycles) {
            vcd->close();
            vcd.reset();
            trace_file = nullptr;
        }
#endif
    };

    // Reset, then a short idle run to measure the speed (reported for the host's timeouts).
    top->uart_rx = 1;
    top->reset = 1;
    for (int i = 0; i < 16; i++) tick();
    top->reset = 0;
    auto t_probe = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < probe_cycles; i++) tick();
    double probe_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_probe).count();
    double speed = probe_s > 0 ? probe_cycles / probe_s : 0.0;

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) die("posix_openpt");
    if (grantpt(master) || unlockpt(master)) die("grantpt/unlockpt");
    char* name = ptsname(master);
    if (!name) die("ptsname");
    std::string slave_path = name;
    int slave = open(slave_path.c_str(), O_RDWR | O_NOCTTY);
    if (slave < 0) die("open slave");
    for (int fd : {master, slave}) {
        struct termios t;
        if (tcgetattr(fd, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(fd, TCSANOW, &t);
        }
    }
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

    printf("SIM: clock_hz=%llu clocks_per_bit=%u baud_equivalent=%llu cycles_per_second=%.0f noise=%g seed=%llu\n",
           (unsigned long long)clock_hz, cpb, (unsigned long long)(clock_hz / cpb), speed, noise_rate,
           (unsigned long long)seed);
    printf("UART: %s\n", slave_path.c_str());
    fflush(stdout);

    Noise noise_in, noise_out;
    noise_in.rate = noise_out.rate = noise_rate;
    noise_in.rng.s = seed * 2 + 1;
    noise_out.rng.s = seed * 2 + 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 4; i++) noise_in.rng.next(), noise_out.rng.next();

    std::deque<uint8_t> to_board;
    std::vector<uint8_t> to_host;
    // Serializer (host -> board): bit slot index 0..9 of the current byte, cycles left in it.
    int ser_bit = -1;
    uint32_t ser_left = 0;
    uint16_t ser_frame = 0;
    bool ser_level = true;
    // Deserializer (board -> host).
    int des_bit = -1;  // -1 idle, 0 start, 1..8 data, 9 stop
    uint32_t des_left = 0;
    uint8_t des_byte = 0;
    bool last_tx = true;
    uint64_t bytes_in = 0, bytes_out = 0, framing_errors = 0;
    bool connected = false;
    bool hung_up = false;
    uint64_t last_activity = cycle;
    // Longer than the board's frame idle timeout (2^16 bit times), so a partial frame is
    // dropped by the board before the simulator starts waiting for the host.
    const uint64_t idle_after = (uint64_t)cpb * 70000;
    auto wall0 = std::chrono::steady_clock::now();
    uint64_t cycle0 = cycle;

    auto report = [&]() {
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
        printf("CYCLES: cycles=%llu wall_seconds=%.3f bytes_in=%llu bytes_out=%llu framing_errors=%llu "
               "noise_flips=%llu noise_drops=%llu\n",
               (unsigned long long)(cycle - cycle0), wall, (unsigned long long)bytes_in,
               (unsigned long long)bytes_out, (unsigned long long)framing_errors,
               (unsigned long long)(noise_in.flips + noise_out.flips),
               (unsigned long long)(noise_in.drops + noise_out.drops));
        fflush(stdout);
    };

    auto service_pty = [&](int timeout_ms) {
        struct pollfd p = {master, POLLIN, 0};
        if (!to_host.empty()) p.events |= POLLOUT;
        int r = poll(&p, 1, timeout_ms);
        if (r < 0) {
            if (errno == EINTR) return;
            die("poll");
        }
        if (to_board.size() < 8192) {
            uint8_t buf[4096];
            ssize_t n = read(master, buf, sizeof buf);
            if (n > 0) {
                to_board.insert(to_board.end(), buf, buf + n);
                last_activity = cycle;
                if (!connected) {
                    connected = true;
                    if (once) {
                        // From now on the host's close is a hang-up we want to see.
                        close(slave);
                        slave = -1;
                    }
                }
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                if (errno == EIO) hung_up = true;
                else die("read pty");
            }
        }
        if (!to_host.empty()) {
            ssize_t w = write(master, to_host.data(), to_host.size());
            if (w > 0) to_host.erase(to_host.begin(), to_host.begin() + w);
            else if (w < 0 && errno == EIO) hung_up = true;
        }
        if ((p.revents & POLLHUP) && slave < 0) hung_up = true;
    };

    while (!g_stop) {
        if (g_report) {
            g_report = 0;
            report();
        }
        if ((cycle & 255) == 0) {
            bool idle = to_board.empty() && to_host.empty() && ser_bit < 0 && des_bit < 0 && !top->led_busy &&
                        cycle - last_activity > idle_after;
            service_pty(idle ? 20 : 0);
            if (hung_up && once) break;
            if (hung_up) {
                // Without --once the slave is held open here, so this is not expected; go on.
                hung_up = false;
            }
            if (idle && to_board.empty()) continue;
        }
        // Host -> board.
        if (ser_bit < 0 && !to_board.empty()) {
            ser_frame = (uint16_t)(0x200 | (to_board.front() << 1));  // start 0, data, stop 1
            to_board.pop_front();
            bytes_in++;
            ser_bit = 0;
            ser_left = 0;
        }
        if (ser_bit >= 0 && ser_left == 0) {
            // Next bit slot (or the end of the byte).
            for (;;) {
                if (ser_bit >= 10) {
                    ser_bit = -1;
                    ser_level = true;
                    break;
                }
                bool level = (ser_frame >> ser_bit) & 1;
                int h = noise_in.hit();
                ser_bit++;
                if (h == 2) continue;  // dropped: the next bit takes this slot
                ser_level = h == 1 ? !level : level;
                ser_left = cpb;
                break;
            }
        }
        top->uart_rx = ser_bit >= 0 ? ser_level : 1;
        tick();
        if (ser_bit >= 0 && ser_left > 0) {
            ser_left--;
            if (ser_left == 0 && ser_bit >= 10) {
                ser_bit = -1;
            }
        }
        // Board -> host.
        bool tx = top->uart_tx;
        if (des_bit < 0) {
            if (last_tx && !tx) {
                des_bit = 0;
                des_left = cpb / 2;  // to the middle of the start bit
                des_byte = 0;
                last_activity = cycle;
            }
        } else if (--des_left == 0) {
            des_left = cpb;
            bool level = tx;
            int h = noise_out.hit();
            if (h == 1) level = !level;
            if (h == 2) {
                // dropped: this sample does not count, the next bit time stands in for it
            } else if (des_bit == 0) {
                if (level) des_bit = -1;  // glitch, not a start bit
                else des_bit = 1;
            } else if (des_bit <= 8) {
                des_byte |= (uint8_t)(level << (des_bit - 1));
                des_bit++;
            } else {
                if (level) {
                    to_host.push_back(des_byte);
                    bytes_out++;
                } else {
                    framing_errors++;
                }
                des_bit = -1;
                des_left = 0;
            }
        }
        last_tx = tx;
        if (!to_host.empty() && (to_host.size() >= 64 || des_bit < 0)) {
            ssize_t w = write(master, to_host.data(), to_host.size());
            if (w > 0) to_host.erase(to_host.begin(), to_host.begin() + w);
        }
    }
#if VM_TRACE
    if (vcd) vcd->close();
#endif
    top->final();
    report();
    return 0;
}
