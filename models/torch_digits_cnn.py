"""Handwritten digits (8x8 images) with a small PyTorch CNN.

Data: scikit-learn's bundled `load_digits` (1797 images, 10 classes), nothing downloaded.
Checkpoints every epoch with the kit (`kit.torch_resume` / `kit.torch_epoch_end`), so a killed
training resumes where it stopped and more epochs continue the previous attempt's training.
Reports the accuracy on a held-out 25% split and saves output/model.pt.
"""

from __future__ import annotations

import math

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from jobs import kit

SEED = 42
EPOCHS = 3
BATCH_SIZE = 64
torch.manual_seed(SEED)

# --- data: 8x8 images, pixel values 0..16 scaled to 0..1, one channel ----------------------------
digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(digits.target)
train_idx, val_idx = train_test_split(
    range(len(y)), test_size=0.25, stratify=digits.target, random_state=SEED
)
x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]

# --- model ---------------------------------------------------------------------------------------
model = nn.Sequential(
    nn.Conv2d(1, 8, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(8, 16, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(16 * 2 * 2, 32),
    nn.ReLU(),
    nn.Linear(32, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
loss_fn = nn.CrossEntropyLoss()


def evaluate(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    return loss_fn(logits, targets).item(), (logits.argmax(1) == targets).float().mean().item()


# --- training: from the kit's checkpoint when the attempt resumes ---------------------------------
start = kit.torch_resume(model, optimizer)
steps = math.ceil(len(x_train) / BATCH_SIZE)
for epoch in range(start, EPOCHS):
    model.train()
    # the epoch's own shuffle: a resumed training sees the batches a training from scratch would
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SEED + epoch))
    total_loss, correct = 0.0, 0
    for i in range(0, len(order), BATCH_SIZE):
        batch = order[i:i + BATCH_SIZE]
        optimizer.zero_grad()
        logits = model(x_train[batch])
        loss = loss_fn(logits, y_train[batch])
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch)
        correct += (logits.argmax(1) == y_train[batch]).sum().item()
    val_loss, val_accuracy = evaluate(x_val, y_val)
    print(f"epoch {epoch + 1}/{EPOCHS}: loss {total_loss / len(order):.4f}, "
          f"val_accuracy {val_accuracy:.4f}", flush=True)
    kit.torch_epoch_end(epoch, model, optimizer, epochs=EPOCHS, steps=steps,
                        loss=total_loss / len(order), accuracy=correct / len(order),
                        val_loss=val_loss, val_accuracy=val_accuracy)

# --- results -------------------------------------------------------------------------------------
val_loss, accuracy = evaluate(x_val, y_val)
torch.save(model.state_dict(), kit.output_dir() / "model.pt")
kit.report(accuracy=round(accuracy, 4), val_loss=round(val_loss, 4), examples=len(y_val))
