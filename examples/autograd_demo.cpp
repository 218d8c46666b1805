// autograd_demo — the tape in action: fit a two-layer MLP to a synthetic
// regression target y = sin(3·x₀) + x₁² with plain gradient descent, then
// check the tape's gradients against finite differences.
//
//   build/bin/autograd_demo                 # defaults
//   build/bin/autograd_demo --steps 2000 --hidden 64 --lr 0.05
#include <cmath>
#include <cstdio>
#include <string>

#include <moekit.hpp>

#include "common/flags.hpp"
#include "common/runtime_settings.hpp"

using namespace moekit;

namespace {

struct options {
  int steps = 600, hidden = 32, batch = 256, threads = 1, seed = 7;
  double lr = 0.1;
};

/// Inputs uniform in (-1, 1]² and the target sin(3·x₀) + x₁².
struct dataset {
  tensor<float, shape<dyn, 2>> x;  // (n, 2)
  tensor<float, shape<dyn, 1>> y;  // (n, 1)
};
dataset make_data(rng& g, std::size_t n) {
  auto x = uniform<float>(g, shape<dyn, 2>{n}, -1.0f, 1.0f);
  tensor<float, shape<dyn, 1>> y(shape<dyn, 1>{n});
  for (std::size_t i = 0; i < n; ++i) y(i, 0) = std::sin(3 * x(i, 0)) + x(i, 1) * x(i, 1);
  return {x, y};
}

/// A two-layer MLP with dynamic width: x -> tanh(x W1 + b1) W2 + b2.
struct two_layer_net {
  parameter<float, shape<2, dyn>> w1;
  parameter<float, shape<dyn>> b1;
  parameter<float, shape<dyn, 1>> w2;
  parameter<float, shape<1>> b2;

  two_layer_net(rng& g, std::size_t hidden)
      : w1(normal<float>(g, shape<2, dyn>{hidden}, 0.0f, 1.0f)),
        b1(zeros<float>(shape<dyn>{hidden})),
        w2(normal<float>(g, shape<dyn, 1>{hidden}, 0.0f, 1.0f / std::sqrt(static_cast<float>(hidden)))),
        b2(zeros<float>(shape<1>{})) {}

  var<float, shape<dyn, 1>> operator()(const var<float, shape<dyn, 2>>& x) {
    auto h = tanh(add_rows(matmul(x, w1), b1));  // (n, hidden)
    return add_rows(matmul(h, w2), b2);           // (n, 1)
  }

  template <class F>
  void parameters(F&& visit) {
    visit(w1), visit(b1), visit(w2), visit(b2);
  }
};

float evaluate(two_layer_net& model, const dataset& d) {
  no_grad guard;
  tape t;
  auto err = model(t.input(d.x)) - t.input(d.y);
  return mean(err * err).value()[0];
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("autograd_demo", "Fits a two-layer MLP to y = sin(3 x0) + x1^2 with moekit's tape autograd,\n"
                             "then checks the tape's gradients against finite differences.");
  cli.add("steps", o.steps, "gradient-descent steps");
  cli.add("hidden", o.hidden, "hidden units");
  cli.add("batch", o.batch, "examples per step");
  cli.add("lr", o.lr, "learning rate");
  cli.add("seed", o.seed, "random seed");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();
  if (o.steps < 1 || o.hidden < 1 || o.batch < 1) throw value_error("--steps, --hidden, --batch must be >= 1");
  set_num_threads(o.threads);

  rng g(static_cast<std::uint64_t>(o.seed));
  auto train = make_data(g, 8192), test = make_data(g, 2048);
  two_layer_net model(g, static_cast<std::size_t>(o.hidden));
  const float initial = evaluate(model, test);

  tape t;
  const std::size_t n = train.x.extent(0), batch = static_cast<std::size_t>(o.batch);
  for (int step = 1; step <= o.steps; ++step) {
    const std::size_t begin = (static_cast<std::size_t>(step - 1) * batch) % (n - batch + 1);
    auto err = model(t.input(train.x.rows(begin, begin + batch))) - t.input(train.y.rows(begin, begin + batch));
    auto loss = mean(err * err);
    t.backward(loss);
    model.parameters([&](auto& p) {  // SGD: p -= lr * grad (optimizers arrive with nn/ and optim/)
      add_into(p.value(), p.grad() * static_cast<float>(-o.lr));
      p.zero_grad();
    });
    t.reset();
    if (step % 100 == 0 || step == o.steps)
      std::fprintf(stderr, "\rstep %5d/%d  train mse %.5f", step, o.steps, static_cast<double>(loss.value()[0]));
  }
  std::fprintf(stderr, "\n");
  const float final_mse = evaluate(model, test);

  // The tape against central differences, in double, on a small copy of the model.
  auto check = check_gradients(
      [](auto x, auto w1, auto b1, auto w2) { return mean(pow(matmul(tanh(add_rows(matmul(x, w1), b1)), w2), 2.0)); },
      normal<double>(g, shape<dyn, 2>{4}), normal<double>(g, shape<2, 5>{}), normal<double>(g, shape<5>{}),
      normal<double>(g, shape<5, 1>{}));

  std::printf("%-28s %12s\n", "metric", "value");
  std::printf("%-28s %12.5f\n", "test mse before training", static_cast<double>(initial));
  std::printf("%-28s %12.5f\n", "test mse after training", static_cast<double>(final_mse));
  std::printf("%-28s %12zu\n", "gradients checked", check.checked);
  std::printf("%-28s %12.2e\n", "max |tape - numeric|", check.max_abs_error);
  std::printf("{\"test_mse_before\": %.6f, \"test_mse_after\": %.6f, \"gradcheck_ok\": %s}\n",
              static_cast<double>(initial), static_cast<double>(final_mse), check.ok ? "true" : "false");
  return check.ok && final_mse < initial ? 0 : 1;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "autograd_demo: %s\n", e.what());
  return 2;
}
