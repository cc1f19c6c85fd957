"""Digits classifier in plain PyTorch (a DataLoader, an SGD loop) at learning rate 0.001: after
its few epochs it has barely moved. Written without pushtune; prints `val_acc …` per epoch and
saves the weights as net.pth.

Known fix: lr=0.001 -> lr=0.01.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)

digits = load_digits()
X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=32, shuffle=True)

net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

for epoch in range(6):
    net.train()
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        val_acc = (net(X_val).argmax(dim=1) == y_val).float().mean().item()
    print(f"epoch {epoch + 1}, loss {loss.item():.4f}, val_acc {val_acc:.4f}")

torch.save(net.state_dict(), "net.pth")
