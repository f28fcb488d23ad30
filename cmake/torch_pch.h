// Precompiled header for every LibTorch-using target (see cmake/NatsHelpers.cmake).
#pragma once
#include <torch/torch.h>
