// moekit::blas_info: the kernel recommendation replayed on recorded CPU /
// OpenBLAS-kernel pairs (the machines docs/benchmarks.md measured, and pairs
// where OpenBLAS is already right), the one-line description and the warning,
// and on this machine: CPUID against /proc/cpuinfo, the linked BLAS, a
// positive, finite sgemm ceiling (no timing threshold).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

#include <moekit.hpp>

namespace blas_info_test {

using moekit::cpu_isa;

cpu_isa intel_avx512(int model) {  // Skylake-SP and later Xeons: AVX-512 F/BW/VL/DQ, 2 FMA ports
  cpu_isa c;
  c.vendor = "GenuineIntel";
  c.brand = "Intel(R) Xeon(R) Processor";
  c.family = 6;
  c.model = model;
  c.avx2 = c.fma = c.avx512f = c.avx512bw = c.avx512vl = c.avx512dq = true;
  return c;
}
cpu_isa intel_avx2(int model) {  // Haswell / Broadwell: AVX2 + FMA, no AVX-512
  cpu_isa c;
  c.vendor = "GenuineIntel";
  c.brand = "Intel(R) Xeon(R) CPU E5-2680 v3";
  c.family = 6;
  c.model = model;
  c.avx2 = c.fma = true;
  return c;
}
cpu_isa amd(int family, int model, bool avx512) {  // Zen 3 (25/1), Zen 4 (25/17), Zen 5 (26/2)
  cpu_isa c;
  c.vendor = "AuthenticAMD";
  c.brand = "AMD EPYC";
  c.family = family;
  c.model = model;
  c.avx2 = c.fma = true;
  c.avx512f = c.avx512bw = c.avx512vl = c.avx512dq = c.avx512_bf16 = avx512;
  return c;
}

struct recorded_pair {
  const char* what;
  cpu_isa cpu;
  const char* corename;
  const char* expected;  // "" : the kernel is right
};

/// /proc/cpuinfo's first "key : value", or "" when absent.
std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string k = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    if (k == key) return colon + 2 <= line.size() ? line.substr(colon + 2) : "";
  }
  return "";
}


TEST_CASE("blas_info: the kernel recommendation on recorded CPU / kernel pairs", "[backend][blas_info]") {
  cpu_isa sapphire = intel_avx512(143);
  sapphire.avx512_bf16 = sapphire.amx_tile = sapphire.amx_bf16 = true;
  cpu_isa zmm_not_saved = intel_avx512(85);  // AVX-512 in CPUID, but the OS does not save ZMM (XCR0)
  zmm_not_saved.avx512f = zmm_not_saved.avx512bw = zmm_not_saved.avx512vl = zmm_not_saved.avx512dq = false;
  cpu_isa arm;  // no CPUID: vendor empty
  const recorded_pair pairs[] = {
      // Measured: wrong kernels.
      {"Xeon 6/207, OpenBLAS 0.3.21 picks Prescott (32 GFLOP/s; SkylakeX 145-152)", intel_avx512(207), "Prescott",
       "SkylakeX"},
      {"Zen 5 26/2 with Haswell (~100 GFLOP/s; SkylakeX 180-200)", amd(26, 2, true), "Haswell", "SkylakeX"},
      {"Zen 5 with the generic kernel", amd(26, 2, true), "Prescott", "SkylakeX"},
      {"Sapphire Rapids with Haswell", sapphire, "Haswell", "SkylakeX"},
      {"a TARGET=PRESCOTT build on the Xeon (upper-case name)", intel_avx512(207), "PRESCOTT", "SkylakeX"},
      {"Haswell CPU with the Sandybridge kernel", intel_avx2(63), "Sandybridge", "Haswell"},
      {"Zen 4 with the generic kernel: AVX2 is the right class there", amd(25, 17, true), "Prescott", "Zen"},
      {"Zen 3 with Bulldozer", amd(25, 1, false), "Bulldozer", "Zen"},
      {"AVX-512 the OS does not enable: AVX2 only", zmm_not_saved, "Nehalem", "Haswell"},
      // Already right.
      {"Skylake-SP with SkylakeX", intel_avx512(85), "SkylakeX", ""},
      {"Xeon 6/207 with OPENBLAS_CORETYPE=SkylakeX", intel_avx512(207), "SkylakeX", ""},
      {"Sapphire Rapids with SapphireRapids", sapphire, "SapphireRapids", ""},
      {"Zen 5 with Cooperlake (0.3.21's own choice with AVX512-BF16)", amd(26, 2, true), "Cooperlake", ""},
      {"Zen 4 with Zen: 512-bit FMA is double-pumped", amd(25, 17, true), "Zen", ""},
      {"Zen 4 with Haswell", amd(25, 17, true), "Haswell", ""},
      {"Zen 4 with SkylakeX is not downgraded", amd(25, 17, true), "SkylakeX", ""},
      {"Zen 3 with Zen", amd(25, 1, false), "Zen", ""},
      {"Haswell CPU with Haswell", intel_avx2(63), "Haswell", ""},
      {"a TARGET=SKYLAKEX build", intel_avx512(85), "SKYLAKEX", ""},
      {"AVX-512 the OS does not enable, Haswell kernel", zmm_not_saved, "Haswell", ""},
      // Nothing to say.
      {"not OpenBLAS (no corename)", intel_avx512(207), "", ""},
      {"a kernel name this rule does not know", amd(26, 2, true), "Zen5", ""},
      {"not x86", arm, "ARMV8", ""},
  };
  for (const auto& p : pairs) {
    INFO(p.what << ": " << p.cpu.to_string() << ", kernel '" << p.corename << "'");
    CHECK(moekit::recommend_openblas_coretype(p.cpu, p.corename) == p.expected);
  }
}

TEST_CASE("blas_info: kernel classes and full-rate AVX-512", "[backend][blas_info]") {
  using moekit::blas_kernel_class;
  CHECK(moekit::classify_openblas_core("SkylakeX") == blas_kernel_class::avx512);
  CHECK(moekit::classify_openblas_core("cooperlake") == blas_kernel_class::avx512);
  CHECK(moekit::classify_openblas_core("ZEN") == blas_kernel_class::avx2);
  CHECK(moekit::classify_openblas_core("Prescott") == blas_kernel_class::pre_avx2);
  CHECK(moekit::classify_openblas_core("Excavator") == blas_kernel_class::pre_avx2);
  CHECK(moekit::classify_openblas_core("NEOVERSEN1") == blas_kernel_class::unknown);
  CHECK(moekit::classify_openblas_core("") == blas_kernel_class::unknown);
  CHECK(moekit::full_rate_avx512_fma(intel_avx512(207)));
  CHECK(moekit::full_rate_avx512_fma(amd(26, 2, true)));
  CHECK_FALSE(moekit::full_rate_avx512_fma(amd(25, 17, true)));
  CHECK_FALSE(moekit::full_rate_avx512_fma(intel_avx2(63)));
}

TEST_CASE("blas_info: the description line and the warning", "[backend][blas_info]") {
  moekit::blas_description d;
  d.library = "OpenBLAS";
  d.version = "0.3.21";
  d.config = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64";
  d.dynamic_arch = true;
  d.cpu = amd(26, 2, true);

  SECTION("moekit re-executed with the better kernel") {
    d.kernel = "SkylakeX";
    d.coretype_env = "SkylakeX";
    d.chosen_by_openblas = "Haswell";
    CHECK(d.to_string() ==
          "OpenBLAS 0.3.21, kernel SkylakeX (AVX-512; OpenBLAS chose Haswell, moekit set OPENBLAS_CORETYPE=SkylakeX)");
    CHECK(moekit::detail::blas_kernel_warning(d).empty());
  }
  SECTION("the user chose a slower kernel: said, not warned") {
    d.kernel = "Haswell";
    d.coretype_env = "Haswell";
    d.coretype_set_by_user = true;
    d.recommended_coretype = "SkylakeX";
    CHECK(d.to_string() ==
          "OpenBLAS 0.3.21, kernel Haswell (AVX2; OPENBLAS_CORETYPE=Haswell set by the user; SkylakeX would be about "
          "2x faster)");
    CHECK(moekit::detail::blas_kernel_warning(d).empty());
  }
  SECTION("OpenBLAS's choice is right") {
    d.kernel = "Cooperlake";
    CHECK(d.to_string() == "OpenBLAS 0.3.21, kernel Cooperlake (AVX-512; OpenBLAS's choice)");
    CHECK(moekit::detail::blas_kernel_warning(d).empty());
  }
  SECTION("OpenBLAS's choice is slow: the warning names the CPU, the kernel, the gain and the remedy") {
    d.kernel = "Haswell";
    d.recommended_coretype = "SkylakeX";
    CHECK(d.to_string() ==
          "OpenBLAS 0.3.21, kernel Haswell (AVX2; OpenBLAS's choice; SkylakeX would be about 2x faster: export "
          "OPENBLAS_CORETYPE=SkylakeX)");
    const std::string w = moekit::detail::blas_kernel_warning(d);
    CHECK(w.rfind("moekit: warning: ", 0) == 0);
    CHECK(w.find("family 26 model 2") != std::string::npos);
    CHECK(w.find("Haswell kernel") != std::string::npos);
    CHECK(w.find("about 2x") != std::string::npos);
    CHECK(w.find("`export OPENBLAS_CORETYPE=SkylakeX`") != std::string::npos);
    CHECK(w.find("MOEKIT_NO_BLAS_WARNING") != std::string::npos);
    d.dynamic_arch = false;  // a TARGET build: the variable would do nothing
    CHECK(moekit::detail::blas_kernel_warning(d).find("DYNAMIC_ARCH=1") != std::string::npos);
  }
  SECTION("not OpenBLAS") {
    moekit::blas_description other;
    other.library = "CBLAS (not OpenBLAS)";
    other.cpu = d.cpu;
    CHECK(other.to_string() == "CBLAS (not OpenBLAS), kernel unknown");
    CHECK(moekit::detail::blas_kernel_warning(other).empty());
  }
  SECTION("the measured ceiling joins the line") {
    d.kernel = "SkylakeX";
    d.sgemm = {512, 190.4, 371.0, 2};
    CHECK(d.to_string() == "OpenBLAS 0.3.21, kernel SkylakeX (AVX-512; OpenBLAS's choice); sgemm 512^3: 190 GFLOP/s on "
                           "1 thread, 371 on 2");
  }
  CHECK(moekit::detail::openblas_version(d.config) == "0.3.21");
  CHECK(moekit::detail::openblas_version("BLIS 0.9").empty());
  CHECK(d.cpu.to_string() == "AMD EPYC (AuthenticAMD family 26 model 2: AVX2, AVX-512, AVX-512-BF16)");
}

TEST_CASE("blas_info: CPUID agrees with /proc/cpuinfo", "[backend][blas_info]") {
  const cpu_isa c = moekit::detect_cpu();
#if defined(__x86_64__) || defined(__i386__)
  REQUIRE(c.x86());
  const std::string family = cpuinfo_field("cpu family"), model = cpuinfo_field("model"),
                    vendor = cpuinfo_field("vendor_id"), flags = " " + cpuinfo_field("flags") + " ";
  if (family.empty() || flags.size() < 3) {
    WARN("no /proc/cpuinfo: CPUID not cross-checked");
    return;
  }
  INFO(c.to_string() << " against /proc/cpuinfo family " << family << " model " << model);
  CHECK(c.vendor == vendor);
  CHECK(c.family == std::stoi(family));
  CHECK(c.model == std::stoi(model));
  // Linux lists a flag only where the CPU has it and the kernel enabled its state.
  auto has = [&](const char* f) { return flags.find(std::string(" ") + f + " ") != std::string::npos; };
  CHECK(c.avx2 == has("avx2"));
  CHECK(c.fma == has("fma"));
  CHECK(c.avx512f == has("avx512f"));
  CHECK(c.avx512bw == has("avx512bw"));
  CHECK(c.avx512vl == has("avx512vl"));
  CHECK(c.avx512dq == has("avx512dq"));
  CHECK(c.avx512_bf16 == has("avx512_bf16"));
  CHECK(c.amx_tile == has("amx_tile"));
  CHECK(c.amx_bf16 == has("amx_bf16"));
#else
  CHECK_FALSE(c.x86());
  CHECK(moekit::recommend_openblas_coretype(c, "Haswell").empty());
#endif
}

TEST_CASE("blas_info: the linked BLAS on this machine and its sgemm ceiling", "[backend][blas_info]") {
  const moekit::blas_description d = moekit::blas_info(moekit::blas_measure::yes);
  INFO(d.to_string() << "; config '" << d.config << "'");
  if (openblas_get_corename != nullptr) {
    CHECK(d.library == "OpenBLAS");
    CHECK_FALSE(d.kernel.empty());
    CHECK_FALSE(d.version.empty());
    CHECK(moekit::blas_kernel_name() == d.kernel);
    CHECK(d.recommended_coretype == moekit::recommend_openblas_coretype(d.cpu, d.kernel));
    REQUIRE(std::isfinite(d.sgemm.gflops_1thread));
    CHECK(d.sgemm.gflops_1thread > 0);
    CHECK(d.sgemm.threads >= 1);
  } else {
    CHECK(d.library == "CBLAS (not OpenBLAS)");
    CHECK(d.recommended_coretype.empty());
  }
  CHECK(d.sgemm.n == 512);
  REQUIRE(std::isfinite(d.sgemm.gflops));
  CHECK(d.sgemm.gflops > 0);
  CHECK(d.to_string().find("sgemm 512^3") != std::string::npos);
  const auto small = moekit::measure_sgemm_gflops(64, 1);
  CHECK(small.n == 64);
  CHECK((std::isfinite(small.gflops) && small.gflops > 0));
}

TEST_CASE("blas_info: OpenBLAS's OpenMP build is the one loaded where the build found it", "[backend][blas_info]") {
  const std::string threading = moekit::blas_threading_name();
  INFO("OpenBLAS threads: '" << threading << "'");
#if MOEKIT_TEST_BLAS_OPENMP  // cmake/moekit_dependencies.cmake found libopenblas0-openmp: the rpath must win
  CHECK(threading == "OpenMP");
  CHECK(moekit::detail::blas_uses_openmp());
  CHECK(moekit::blas_info().to_string().find("(OpenMP threads)") != std::string::npos);
#else
  if (openblas_get_corename != nullptr)
    CHECK((threading == "OpenMP" || threading == "pthreads" || threading == "sequential"));
  else
    CHECK(threading.empty());
#endif
}

TEST_CASE("blas_info: BLAS thread scopes leave moekit's own thread count alone", "[backend][blas_info]") {
  const int saved = moekit::num_threads();
  moekit::set_num_threads(2);
  {
    moekit::detail::blas_calls_in_parallel spread;  // what the batched and grouped GEMMs hold
    CHECK(moekit::num_threads() == 2);
  }
  CHECK(moekit::num_threads() == 2);
  if (openblas_get_num_threads != nullptr) {
    {
      moekit::detail::blas_single_thread one;  // what the sgemm ceiling's 1-thread figure holds
      CHECK(openblas_get_num_threads() == 1);
    }
    CHECK(openblas_get_num_threads() == 2);
    CHECK(moekit::num_threads() == 2);
  }
  moekit::set_num_threads(saved);
}

TEST_CASE("blas_info: a user's OPENBLAS_CORETYPE is never replaced", "[backend][blas_info]") {
  const char* before = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = before ? before : "";
  ::setenv("OPENBLAS_CORETYPE", "Prescott", 1);  // read by OpenBLAS at load only: this process keeps its kernel
  CHECK_FALSE(moekit::set_blas_kernel_env());
  CHECK(std::string(std::getenv("OPENBLAS_CORETYPE")) == "Prescott");
  const auto d = moekit::blas_info();
  CHECK(d.coretype_set_by_user == (std::getenv("MOEKIT_BLAS_CHOSEN_CORE") == nullptr));
  CHECK(moekit::detail::blas_kernel_warning(d).empty());
  if (before) ::setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else ::unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace blas_info_test
