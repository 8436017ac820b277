#pragma once
/**
 * @file philox.hpp
 * Philox4x32-10, the counter-based random number generator of Salmon et al. (SC'11,
 * "Parallel random numbers: as easy as 1, 2, 3").
 *
 * A counter-based generator maps (key, counter) to 128 random bits with no hidden state, so
 * any element of a random stream can be computed directly, by any thread, in any order. All
 * arithmetic is on unsigned integers, so the output is the same on every platform.
 */

#include <cstddef>
#include <cstdint>

namespace esfast {

/** Four 32-bit words: a Philox counter or a Philox output block. */
struct Philox4x32Block {
    std::uint32_t w[4];
};

/** Stream identifiers placed in counter word 2, so that different uses of one seed never
 *  draw the same bits. */
enum class PhiloxStream : std::uint32_t {
    kNoiseTable = 0,
    kOffsets = 1,
};

/**
 * One Philox4x32-10 evaluation.
 *
 * @param key     64-bit key (normally the user's seed).
 * @param counter four counter words.
 * @return        128 random bits as four words.
 * Thread-safe (pure function); O(1).
 */
constexpr std::uint32_t kPhiloxMul0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxMul1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxWeyl0 = 0x9E3779B9u;
constexpr std::uint32_t kPhiloxWeyl1 = 0xBB67AE85u;

inline Philox4x32Block philox4x32(std::uint64_t key, Philox4x32Block counter) {
    constexpr std::uint32_t kMul0 = kPhiloxMul0, kMul1 = kPhiloxMul1;
    constexpr std::uint32_t kWeyl0 = kPhiloxWeyl0, kWeyl1 = kPhiloxWeyl1;
    std::uint32_t k0 = static_cast<std::uint32_t>(key);
    std::uint32_t k1 = static_cast<std::uint32_t>(key >> 32);
    std::uint32_t c0 = counter.w[0], c1 = counter.w[1], c2 = counter.w[2], c3 = counter.w[3];
    for (int round = 0; round < 10; ++round) {
        const std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
        const std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
        const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32);
        const std::uint32_t lo0 = static_cast<std::uint32_t>(p0);
        const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32);
        const std::uint32_t lo1 = static_cast<std::uint32_t>(p1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += kWeyl0;
        k1 += kWeyl1;
    }
    return Philox4x32Block{{c0, c1, c2, c3}};
}

/**
 * philox4x32() for `n` consecutive counters at once, in structure-of-arrays form: on entry
 * (c0[j], c1[j], c2[j], c3[j]) is counter j, on exit it is that counter's output. Same results as
 * calling philox4x32() per counter; the layout lets compilers vectorize the rounds.
 * Thread-safe; O(n).
 */
inline void philox4x32_soa(std::uint64_t key, std::size_t n, std::uint32_t* c0, std::uint32_t* c1,
                           std::uint32_t* c2, std::uint32_t* c3) {
    std::uint32_t k0 = static_cast<std::uint32_t>(key);
    std::uint32_t k1 = static_cast<std::uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxMul0) * c0[j];
            const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxMul1) * c2[j];
            const std::uint32_t next0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[j] ^ k0;
            const std::uint32_t next2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = static_cast<std::uint32_t>(p1);
            c3[j] = static_cast<std::uint32_t>(p0);
            c0[j] = next0;
            c2[j] = next2;
        }
        k0 += kPhiloxWeyl0;
        k1 += kPhiloxWeyl1;
    }
}

}  // namespace esfast
