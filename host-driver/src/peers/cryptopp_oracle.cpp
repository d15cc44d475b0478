// cryptopp_oracle.cpp - ESIGN interoperability oracle and benchmark peer.
//
// A small command-line wrapper around Crypto++'s ESIGN (IEEE P1363a,
// EMSA5 with MGF1) used to cross-check and benchmark the Rust ESIGN
// implementation. Keys are Crypto++'s raw DER encodings:
//   private key SEQUENCE{n, e, p, q}, public key SEQUENCE{n, e}.
// All files are raw binary bytes.
// Exit codes: 0 ok/valid, 1 invalid signature, 2 usage or input error.
//
// Build: g++ -O2 -std=c++17 -Wall -o oracle cryptopp_oracle.cpp -lcryptopp

#include <crypto++/esign.h>
#include <crypto++/sha.h>
#include <crypto++/osrng.h>
#include <crypto++/files.h>
#include <crypto++/filters.h>
#include <crypto++/algparam.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

using namespace CryptoPP;

static const char *USAGE =
    "usage: oracle keygen BITS E OUT_PRIV OUT_PUB | sign HASH PRIV_DER MSG SIG_OUT"
    " | verify HASH PUB_DER MSG SIG | bench-verify HASH PUB_DER MSG SIG MILLISECONDS"
    " | pub-from-priv PRIV_DER OUT_PUB  (HASH: sha256 or sha1)";

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

static std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

static void write_file(const std::string &path, const std::string &data) {
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), (std::streamsize)data.size());
    if (!out) throw std::runtime_error("cannot write " + path);
}

static unsigned long parse_uint(const std::string &s, const char *what) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError(std::string("bad ") + what + ": " + s);
    return std::stoul(s);
}

// BER-decode a key from a file; the whole file must be consumed.
template <class Key>
static void load_key(Key &key, const std::string &path) {
    StringSource src(read_file(path), true);
    key.BERDecode(src);
    if (src.AnyRetrievable()) throw std::runtime_error("trailing data after key in " + path);
}

template <class Key>
static std::string der(const Key &key) {
    std::string out;
    StringSink sink(out);
    key.DEREncode(sink);
    return out;
}

// Public part of a private key. (DEREncode is virtual, so a cast would not do.)
static std::string public_der(const InvertibleESIGNFunction &priv) {
    ESIGNFunction pub;
    pub.Initialize(priv.GetModulus(), priv.GetPublicExponent());
    return der(pub);
}

static int keygen(unsigned long bits, unsigned long e, const std::string &priv, const std::string &pub) {
    if (bits < 24 || bits > 16383 || bits % 3 != 0)
        throw UsageError("BITS must be a multiple of 3 in [24, 16383]");
    AutoSeededRandomPool rng;
    InvertibleESIGNFunction key;
    // ModulusSize is read with GetIntValue, so it must be an int; PublicExponent
    // is read as an Integer (an int would also be converted).
    key.GenerateRandom(rng, MakeParameters("ModulusSize", (int)bits)("PublicExponent", Integer((long)e)));
    if (key.GetModulus().BitCount() != bits || !key.Validate(rng, 3))
        throw std::runtime_error("generated key failed validation");
    write_file(priv, der(key));
    write_file(pub, public_der(key));
    return 0;
}

template <class H>
static int sign(const std::string &priv, const std::string &msg_path, const std::string &sig_path) {
    AutoSeededRandomPool rng;
    typename ESIGN<H>::Signer signer;
    load_key(signer.AccessKey(), priv);
    // Level 2 checks n == p^2 q and primality; avoids odd behaviour on bogus keys.
    if (!signer.GetKey().Validate(rng, 2)) throw std::runtime_error("invalid private key");
    std::string msg = read_file(msg_path);
    std::string sig(signer.MaxSignatureLength(), '\0');
    size_t len = signer.SignMessage(rng, (const byte *)msg.data(), msg.size(), (byte *)&sig[0]);
    sig.resize(len);
    write_file(sig_path, sig);
    return 0;
}

template <class H>
static int verify(const std::string &pub, const std::string &msg_path, const std::string &sig_path,
                  long bench_ms) {
    typename ESIGN<H>::Verifier verifier;
    load_key(verifier.AccessKey(), pub);
    std::string msg = read_file(msg_path), sig = read_file(sig_path);
    auto once = [&]() {
        return verifier.VerifyMessage((const byte *)msg.data(), msg.size(),
                                      (const byte *)sig.data(), sig.size());
    };
    bool valid = once();  // also serves as the warm-up for bench-verify
    if (bench_ms < 0) return valid ? 0 : 1;

    using clock = std::chrono::steady_clock;
    const int nruns = 5;
    const std::chrono::duration<double> budget(bench_ms / 1000.0 / nruns);
    std::vector<double> rates;
    for (int r = 0; r < nruns; r++) {
        long count = 0;
        auto start = clock::now();
        std::chrono::duration<double> elapsed;
        do {
            if (once() != valid) throw std::runtime_error("verification result changed");
            count++;
            elapsed = clock::now() - start;
        } while (elapsed < budget);
        rates.push_back(count / elapsed.count());
    }
    std::vector<double> sorted = rates;
    std::sort(sorted.begin(), sorted.end());
    std::printf("{\"runs\":[");
    for (size_t i = 0; i < rates.size(); i++) std::printf("%s%.1f", i ? "," : "", rates[i]);
    std::printf("],\"median_verifies_per_second\":%.1f,\"valid\":%s}\n",
                sorted[nruns / 2], valid ? "true" : "false");
    return valid ? 0 : 1;
}

// Dispatch on the hash name for sign/verify/bench-verify.
static int with_hash(const std::string &hash, const std::vector<std::string> &a, long bench_ms) {
    bool is_sign = a[0] == "sign";
    if (hash == "sha256")
        return is_sign ? sign<SHA256>(a[2], a[3], a[4]) : verify<SHA256>(a[2], a[3], a[4], bench_ms);
    if (hash == "sha1")
        return is_sign ? sign<SHA1>(a[2], a[3], a[4]) : verify<SHA1>(a[2], a[3], a[4], bench_ms);
    throw UsageError("unknown hash: " + hash + " (expected sha256 or sha1)");
}

static int run(const std::vector<std::string> &a) {
    const std::string cmd = a.empty() ? "" : a[0];
    if (cmd == "keygen" && a.size() == 5)
        return keygen(parse_uint(a[1], "BITS"), parse_uint(a[2], "E"), a[3], a[4]);
    if ((cmd == "sign" || cmd == "verify") && a.size() == 5)
        return with_hash(a[1], a, -1);
    if (cmd == "bench-verify" && a.size() == 6) {
        long ms = (long)parse_uint(a[5], "MILLISECONDS");
        if (ms < 1) throw UsageError("MILLISECONDS must be positive");
        return with_hash(a[1], a, ms);
    }
    if (cmd == "pub-from-priv" && a.size() == 3) {
        InvertibleESIGNFunction key;
        load_key(key, a[1]);
        write_file(a[2], public_der(key));
        return 0;
    }
    throw UsageError("");
}

int main(int argc, char **argv) {
    try {
        return run(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const UsageError &e) {
        if (*e.what()) std::fprintf(stderr, "oracle: %s\n", e.what());
        else std::fprintf(stderr, "%s\n", USAGE);
    } catch (const Exception &e) {
        std::fprintf(stderr, "oracle: crypto++ error: %s\n", e.what());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "oracle: error: %s\n", e.what());
    }
    return 2;
}
